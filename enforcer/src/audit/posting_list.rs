//! One sorted list of receipt positions, kept in chunks.
//!
//! Why chunks: a list that grows without bound (the time index; an agent, a connector or a
//! status value shared by every receipt) as one `Vec` is copied whole each time it doubles,
//! into memory the kernel must first zero: measured at 64 concurrent calls, those copies and
//! page faults took ~3% of the proxy thread's CPU. Chunks of at most [`CHUNK`] positions are
//! never copied once full; a list with few entries is one small `Vec` as before.

/// Positions per chunk once a list has outgrown its first one (128 KiB of `u128`).
const CHUNK: usize = 8 * 1024;

/// Sorted, duplicate-free positions.
#[derive(Debug, Default)]
pub struct PostingList {
    /// Each chunk sorted and non-empty; every position of a chunk is below the next chunk's.
    chunks: Vec<Vec<u128>>,
    len: usize,
}

impl PostingList {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Inserts `p` (once). Entries arrive nearly in order, so nearly every insert is a push
    /// onto the last chunk.
    pub fn insert(&mut self, p: u128) {
        let Some(last) = self.chunks.last_mut() else {
            self.chunks.push(vec![p]);
            self.len = 1;
            return;
        };
        if last.last().is_some_and(|l| *l < p) {
            if last.len() >= CHUNK {
                let mut fresh = Vec::with_capacity(CHUNK);
                fresh.push(p);
                self.chunks.push(fresh);
            } else {
                last.push(p);
            }
            self.len += 1;
            return;
        }
        // Late: into the first chunk whose last position is >= p (one exists: the last).
        let c = self
            .chunks
            .partition_point(|chunk| chunk.last().is_some_and(|l| *l < p));
        let chunk = &mut self.chunks[c];
        if let Err(i) = chunk.binary_search(&p) {
            // A chunk may grow past CHUNK this way; late inserts are rare.
            chunk.insert(i, p);
            self.len += 1;
        }
    }

    pub fn contains(&self, p: &u128) -> bool {
        let c = self
            .chunks
            .partition_point(|chunk| chunk.last().is_some_and(|l| l < p));
        self.chunks
            .get(c)
            .is_some_and(|chunk| chunk.binary_search(p).is_ok())
    }

    /// The positions within [lo, hi), in order (reversible: search walks newest first).
    pub fn window(&self, lo: u128, hi: u128) -> impl DoubleEndedIterator<Item = u128> + '_ {
        // Chunks wholly below lo or at/above hi are skipped without a look inside.
        let first = self
            .chunks
            .partition_point(|chunk| chunk.last().is_some_and(|l| *l < lo));
        let end = self
            .chunks
            .partition_point(|chunk| chunk.first().is_some_and(|f| *f < hi));
        self.chunks[first..end.max(first)]
            .iter()
            .flat_map(move |chunk| {
                let a = chunk.partition_point(|p| *p < lo);
                let b = chunk.partition_point(|p| *p < hi);
                chunk[a..b.max(a)].iter().copied()
            })
    }

    /// Every position, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u128> + '_ {
        self.chunks.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same positions as a plain sorted, deduplicated vector, over chunk boundaries,
    /// late inserts (into full chunks too) and repeats.
    #[test]
    fn a_chunked_list_reads_as_one_sorted_vector() {
        let mut list = PostingList::default();
        let mut plain: Vec<u128> = Vec::new();
        let mut add = |list: &mut PostingList, p: u128| {
            list.insert(p);
            if let Err(i) = plain.binary_search(&p) {
                plain.insert(i, p);
            }
        };
        for i in 0..(3 * CHUNK as u128 + 17) {
            add(&mut list, 10 * i);
            if i % 1000 == 999 {
                // A late one, a few back, and a repeat.
                add(&mut list, 10 * i - 35);
                add(&mut list, 10 * i);
            }
        }
        // Far back: into the first chunk, and onto chunk borders.
        add(&mut list, 3);
        add(&mut list, 10 * CHUNK as u128 - 5);
        add(&mut list, 10 * CHUNK as u128 + 5);
        add(&mut list, 0);
        let plain = plain;
        assert!(list.chunks.len() > 3, "the list is chunked");
        assert_eq!(list.len(), plain.len());
        assert_eq!(list.iter().collect::<Vec<_>>(), plain);
        assert_eq!(list.iter().rev().collect::<Vec<_>>(), {
            let mut r = plain.clone();
            r.reverse();
            r
        });
        for p in [
            0,
            3,
            4,
            10 * CHUNK as u128 + 5,
            10 * CHUNK as u128 + 6,
            u128::MAX,
        ] {
            assert_eq!(list.contains(&p), plain.binary_search(&p).is_ok(), "{p}");
        }
        let within = |lo: u128, hi: u128| {
            plain
                .iter()
                .copied()
                .filter(|p| *p >= lo && *p < hi)
                .collect::<Vec<_>>()
        };
        for (lo, hi) in [
            (0, 1),
            (5, 5),
            (7, 3),
            (10 * CHUNK as u128 - 100, 10 * CHUNK as u128 + 100),
            (0, u128::MAX),
            (10 * 2 * CHUNK as u128, 10 * 3 * CHUNK as u128 + 1),
            (u128::MAX - 1, u128::MAX),
        ] {
            assert_eq!(list.window(lo, hi).collect::<Vec<_>>(), within(lo, hi));
            let mut rev = within(lo, hi);
            rev.reverse();
            assert_eq!(list.window(lo, hi).rev().collect::<Vec<_>>(), rev);
        }
        assert_eq!(PostingList::default().len(), 0);
        assert_eq!(PostingList::default().window(0, u128::MAX).count(), 0);
    }
}
