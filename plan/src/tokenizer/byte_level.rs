//! GPT-2 byte-level alphabet: every byte 0..=255 is shown as one printable Unicode character
//! (printable Latin-1 bytes map to themselves, the others to U+0100.. in order), which is how
//! GGUF `tokenizer.ggml.tokens` spells BPE tokens ("Ġworld" is " world").
//!
//! The tokenizer works on raw bytes internally; this module converts the stored token strings
//! back to the bytes they stand for.

/// `BYTE_TO_CHAR[b]` is the character GPT-2 uses for byte `b`.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
    }
    table
}

/// Inverse of the GPT-2 alphabet: the byte a character stands for, or `None` for characters
/// outside the alphabet (all of it lies below U+0144).
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x143 => {
            // The 68 non-printable bytes in increasing order: 0x00..=0x20, 0x7F..=0xA0, 0xAD.
            let n = cp - 0x100;
            Some(match n {
                0..=32 => n as u8,
                33..=66 => (0x7F + (n - 33)) as u8,
                _ => 0xAD,
            })
        }
        _ => None,
    }
}

/// Appends the bytes a byte-level token string stands for. Characters outside the alphabet are
/// kept as their own UTF-8 bytes (as the Hugging Face ByteLevel decoder does).
pub fn append_token_bytes(token: &str, out: &mut Vec<u8>) {
    for c in token.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// The byte-level spelling of raw bytes (inverse of [`append_token_bytes`] for in-alphabet strings).
#[cfg(test)]
pub fn bytes_to_token(bytes: &[u8]) -> String {
    let table = byte_to_char_table();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection() {
        let table = byte_to_char_table();
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(table[b as usize]), Some(b), "byte {b}");
        }
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'\t' as usize], 'ĉ');
        assert_eq!(char_to_byte('Ń'), Some(0xAD));
        assert_eq!(char_to_byte('ń'), None);
    }

    fn token_to_bytes(token: &str) -> Vec<u8> {
        let mut out = Vec::new();
        append_token_bytes(token, &mut out);
        out
    }

    #[test]
    fn round_trip_strings() {
        assert_eq!(token_to_bytes("Ġworld"), b" world");
        assert_eq!(bytes_to_token(" world\n".as_bytes()), "ĠworldĊ");
        assert_eq!(token_to_bytes("<|im_end|>"), b"<|im_end|>");
        // Outside the alphabet: kept as UTF-8.
        assert_eq!(token_to_bytes("ńa"), "ńa".as_bytes());
    }
}
