//! Reading context fields the way the verifier accepts: every word loaded on its own at a
//! constant offset from the context pointer. A plain `[u32; 4]` copy is compiled into loads
//! through a moved context pointer, which the verifier rejects.

use core::ptr::read_volatile;

#[inline(always)]
pub fn ip6(field: *const [u32; 4]) -> [u32; 4] {
    unsafe {
        let p = field.cast::<u32>();
        [
            read_volatile(p),
            read_volatile(p.add(1)),
            read_volatile(p.add(2)),
            read_volatile(p.add(3)),
        ]
    }
}
