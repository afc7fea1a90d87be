//! 32-byte keys written as base64 text (the vault key, the audit checkpoint key): one
//! parser, so that both accept and refuse the same texts.

use base64::Engine as _;
use zeroize::Zeroizing;

/// Why a text is not a 32-byte key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    #[error("is not base64")]
    NotBase64,
    #[error("is {0} bytes long")]
    WrongLength(usize),
}

/// Base64 (standard, padding optional, surrounding whitespace ignored) of 32 bytes.
pub fn key32_from_base64(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyTextError> {
    let text = text.trim().trim_end_matches('=');
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(|_| KeyTextError::NotBase64)?,
    );
    let bytes: [u8; 32] = decoded
        .as_slice()
        .try_into()
        .map_err(|_| KeyTextError::WrongLength(decoded.len()))?;
    Ok(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_whitespace_are_optional_and_lengths_are_checked() {
        let text = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            *key32_from_base64(&format!("  {text}\n")).unwrap(),
            [7u8; 32]
        );
        assert_eq!(
            *key32_from_base64(text.trim_end_matches('=')).unwrap(),
            [7u8; 32]
        );
        assert_eq!(
            key32_from_base64("not base64!").unwrap_err(),
            KeyTextError::NotBase64
        );
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert_eq!(
            key32_from_base64(&short).unwrap_err(),
            KeyTextError::WrongLength(16)
        );
    }
}
