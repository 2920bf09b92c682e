//! Payment-card validation: Luhn checksum and issuer (IIN) prefixes.

/// Luhn checksum over ASCII digits. Non-digits make it fail.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

fn prefix_num(digits: &[u8], n: usize) -> u32 {
    digits[..n]
        .iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
}

/// Common issuer prefixes with their valid lengths: Visa, Mastercard, Amex, Discover,
/// Diners Club, JCB, UnionPay, Maestro.
pub(crate) fn iin_ok(digits: &[u8]) -> bool {
    let len = digits.len();
    if !(13..=19).contains(&len) || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let p1 = prefix_num(digits, 1);
    let p2 = prefix_num(digits, 2);
    let p3 = prefix_num(digits, 3);
    let p4 = prefix_num(digits, 4);
    let p6 = prefix_num(digits, 6);
    match () {
        // Visa
        _ if p1 == 4 => matches!(len, 13 | 16 | 19),
        // Mastercard
        _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => len == 16,
        // American Express
        _ if p2 == 34 || p2 == 37 => len == 15,
        // Discover
        _ if p4 == 6011
            || p2 == 65
            || (644..=649).contains(&p3)
            || (622126..=622925).contains(&p6) =>
        {
            (16..=19).contains(&len)
        }
        // UnionPay
        _ if p2 == 62 => (16..=19).contains(&len),
        // JCB
        _ if (3528..=3589).contains(&p4) => (16..=19).contains(&len),
        // Diners Club
        _ if (300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 || p4 == 3095 => {
            (14..=19).contains(&len)
        }
        // Maestro
        _ if p2 == 50 || (56..=58).contains(&p2) || p2 == 63 || p2 == 67 => {
            (12..=19).contains(&len)
        }
        _ => false,
    }
}

/// Strip spaces/dashes and check length, issuer prefix and Luhn.
pub(crate) fn card_valid(candidate: &str) -> bool {
    let mut buf = [0u8; 19];
    let mut n = 0;
    for b in candidate.bytes() {
        match b {
            b'0'..=b'9' => {
                if n == buf.len() {
                    return false;
                }
                buf[n] = b;
                n += 1;
            }
            b' ' | b'-' => {}
            _ => return false,
        }
    }
    let digits = &buf[..n];
    iin_ok(digits) && luhn_valid(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_values() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"41x1"));
    }

    #[test]
    fn test_cards_accepted() {
        for c in [
            "4111111111111111",    // Visa
            "4012888888881881",    // Visa
            "4222222222222",       // Visa 13
            "5555555555554444",    // Mastercard
            "2223003122003222",    // Mastercard 2-series
            "378282246310005",     // Amex
            "371449635398431",     // Amex
            "6011111111111117",    // Discover
            "3530111333300000",    // JCB
            "30569309025904",      // Diners
            "6200000000000005",    // UnionPay
            "4111 1111 1111 1111", // spaced
            "5555-5555-5555-4444", // dashed
        ] {
            assert!(card_valid(c), "{c}");
        }
    }

    #[test]
    fn near_misses_rejected() {
        assert!(!card_valid("4111111111111112")); // Luhn-invalid
        assert!(!card_valid("1234567812345670")); // Luhn-valid, no issuer starts with 1
        assert!(!card_valid("411111111111")); // too short (12)
        assert!(!card_valid("41111111111111111111")); // too long (20)
        assert!(!card_valid("37828224631000")); // Amex prefix, wrong length
        assert!(!card_valid("4111_1111_1111_1111"));
    }
}
