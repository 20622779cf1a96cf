//! Key layouts. Integers are big-endian so fjall's byte order is numeric order.

/// `id` as an 8-byte key.
pub fn u64_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Reads an 8-byte big-endian integer.
pub fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// `(thread id, seq)`: the key of the per-thread indexes.
pub fn thread_seq(tid: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&tid.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `(prefix id, bytes)`: idempotency keys per thread, votes per comment.
pub fn id_bytes(id: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + rest.len());
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(rest);
    k
}
