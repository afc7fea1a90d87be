//! Generated passwords: the service account's new one in a rotation, and a new
//! account's first one (`generated_password` in create_user).

use rand::Rng;
use secrecy::SecretString;
use zeroize::Zeroizing;

/// Length of generated passwords.
pub const PASSWORD_LEN: usize = 32;

const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"23456789";
/// Symbols that survive forms, URLs and shells without quoting trouble.
const SYMBOLS: &[u8] = b"!#%+-.=@_~";

/// A random password of [`PASSWORD_LEN`] characters with at least one lower-case and
/// one upper-case letter, one digit and one symbol (typical complexity rules), from
/// the operating system's CSPRNG (through `rand`'s thread RNG).
pub fn generate_password() -> SecretString {
    let all: Vec<u8> = [LOWER, UPPER, DIGITS, SYMBOLS].concat();
    let mut rng = rand::rng();
    loop {
        let mut pw = Zeroizing::new(String::with_capacity(PASSWORD_LEN));
        for _ in 0..PASSWORD_LEN {
            pw.push(char::from(all[rng.random_range(0..all.len())]));
        }
        let has = |set: &[u8]| pw.bytes().any(|b| set.contains(&b));
        if has(LOWER) && has(UPPER) && has(DIGITS) && has(SYMBOLS) {
            return SecretString::from(pw.as_str().to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn generated_passwords_are_long_mixed_and_distinct() {
        let a = generate_password();
        let b = generate_password();
        let a = a.expose_secret();
        assert_eq!(a.chars().count(), PASSWORD_LEN);
        assert_ne!(a, b.expose_secret());
        for set in [LOWER, UPPER, DIGITS, SYMBOLS] {
            assert!(a.bytes().any(|c| set.contains(&c)), "missing a class");
        }
        assert!(
            a.bytes()
                .all(|c| [LOWER, UPPER, DIGITS, SYMBOLS].concat().contains(&c))
        );
    }
}
