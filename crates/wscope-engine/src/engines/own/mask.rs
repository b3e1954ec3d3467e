//! Masking (RFC 6455 §5.3): the payload XORed with a 4-byte key, a word at a time.
//!
//! Eight bytes per step through `u64`s built from the byte chunks (the compiler emits plain
//! unaligned loads and stores, and vectorises the loop), no `unsafe`. The key is rotated to the
//! phase the slice starts at, so that a payload unmasked over several reads comes out right.

/// XORs `bytes` with `key`, the first byte of `bytes` being byte `phase` of the payload.
pub(crate) fn apply(bytes: &mut [u8], key: [u8; 4], phase: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| key[(phase + i) % 4]);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0; 8];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise(bytes: &mut [u8], key: [u8; 4], phase: usize) {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b ^= key[(phase + i) % 4];
        }
    }

    #[test]
    fn word_wise_masking_matches_bytewise_at_every_length_and_phase() {
        let key = [0x12, 0x9a, 0x5c, 0xe1];
        let data: Vec<u8> = (0..100u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..data.len() {
            for phase in 0..4 {
                let mut fast = data[..len].to_vec();
                let mut slow = fast.clone();
                apply(&mut fast, key, phase);
                bytewise(&mut slow, key, phase);
                assert_eq!(fast, slow, "len {len} phase {phase}");
            }
        }
    }

    #[test]
    fn a_payload_masked_in_pieces_matches_one_masked_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..77u8).collect();
        let mut whole = data.clone();
        apply(&mut whole, key, 0);
        for cut in 0..data.len() {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply(a, key, 0);
            apply(b, key, cut);
            assert_eq!(parts, whole, "cut at {cut}");
        }
    }
}
