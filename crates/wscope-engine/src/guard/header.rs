//! WebSocket frame headers as the guard reads and writes them (RFC 6455 §5.2): parsed as their
//! bytes arrive, possibly over several reads, and encoded with the shortest length.

/// The most bytes a frame header takes: 2, then up to 8 of extended length, then 4 of mask.
pub(crate) const MAX_HEADER: usize = 14;
/// RSV1: on the first frame of a message, "compressed" under permessage-deflate.
pub(crate) const RSV1: u8 = 0x40;

/// A frame header, read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) rsv1: bool,
    /// RSV2 or RSV3: no extension wscope speaks uses them.
    pub(crate) rsv23: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) len: u64,
}

/// How many bytes the header whose second byte is `b1` takes.
pub(crate) fn header_len(b1: u8) -> usize {
    let extended = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if b1 & 0x80 != 0 { 4 } else { 0 }
}

impl Header {
    /// The header of a frame whose first byte is `first` (FIN, RSV1, opcode; RSV2/RSV3 read as
    /// set if either is), masked with `mask` if given, of `len` payload bytes.
    pub(crate) fn new(first: u8, mask: Option<[u8; 4]>, len: u64) -> Self {
        Self {
            fin: first & 0x80 != 0,
            rsv1: first & RSV1 != 0,
            rsv23: first & 0x30 != 0,
            opcode: first & 0x0f,
            mask,
            len,
        }
    }

    pub(crate) fn parse(h: &[u8]) -> Self {
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut n = [0; 8];
                n.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        Self {
            fin: h[0] & 0x80 != 0,
            rsv1: h[0] & RSV1 != 0,
            rsv23: h[0] & 0x30 != 0,
            opcode: h[0] & 0x0f,
            mask: (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]),
            len,
        }
    }

    /// Writes this header, with the shortest length encoding, into `out`; returns its length.
    pub(crate) fn encode(&self, out: &mut [u8; MAX_HEADER]) -> usize {
        out[0] = u8::from(self.fin) << 7 | u8::from(self.rsv1) << 6 | self.opcode;
        let masked = u8::from(self.mask.is_some()) << 7;
        let mut at = match self.len {
            0..=125 => {
                out[1] = masked | self.len as u8;
                2
            }
            126..=0xffff => {
                out[1] = masked | 126;
                out[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
                4
            }
            _ => {
                out[1] = masked | 127;
                out[2..10].copy_from_slice(&self.len.to_be_bytes());
                10
            }
        };
        if let Some(mask) = self.mask {
            out[at..at + 4].copy_from_slice(&mask);
            at += 4;
        }
        at
    }
}

/// A frame header as its bytes arrive, possibly over several reads.
#[derive(Default)]
pub(crate) struct HeaderBuf {
    bytes: [u8; MAX_HEADER],
    have: u8,
}

impl HeaderBuf {
    /// Whether no byte of a header is in yet (the stream is at a frame boundary).
    pub(crate) fn is_empty(&self) -> bool {
        self.have == 0
    }

    /// Takes what `bytes` holds of the header: how many bytes it took, and the header once
    /// complete (its bytes stay in [`HeaderBuf::raw`] until the next one begins).
    pub(crate) fn take(&mut self, bytes: &[u8]) -> (usize, Option<Header>) {
        let mut taken = 0;
        loop {
            let have = usize::from(self.have);
            let need = if have < 2 {
                2
            } else {
                header_len(self.bytes[1])
            };
            if have == need {
                self.have = 0;
                return (taken, Some(Header::parse(&self.bytes[..need])));
            }
            let n = (need - have).min(bytes.len() - taken);
            if n == 0 {
                return (taken, None);
            }
            self.bytes[have..have + n].copy_from_slice(&bytes[taken..taken + n]);
            self.have += n as u8;
            taken += n;
        }
    }

    /// The bytes of the header last completed.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.bytes[..header_len(self.bytes[1])]
    }
}
