//! Counts as people read them in logs and messages.

/// `149900` → `149,900`.
pub fn with_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_digits_by_three() {
        assert_eq!(super::with_thousands(0), "0");
        assert_eq!(super::with_thousands(999), "999");
        assert_eq!(super::with_thousands(149_900), "149,900");
        assert_eq!(super::with_thousands(1_234_567), "1,234,567");
    }
}
