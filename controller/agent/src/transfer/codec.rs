//! Compression of the stream on the wire. The source encodes chunk by chunk as it reads
//! `zfs send`; the target decodes chunk by chunk as frames arrive. The transport does not
//! keep chunk boundaries, so the format is one zstd stream, not framed chunks. Worth it
//! for streams sent without `-c` (or raw) over a slow link; the default is none, since a
//! `-c` stream of compressed blocks gains little and costs CPU on both nodes.

use std::borrow::Cow;

use bytes::Bytes;

use tidepool_wire::transfer::WireCompression;
use zstd::stream::raw::{Decoder as ZDecoder, Encoder as ZEncoder, InBuffer, Operation, OutBuffer};

/// Whether this build can encode and decode zstd.
pub const ZSTD_AVAILABLE: bool = true;

/// zstd's level 1: the fastest, so compression does not become the bottleneck of a
/// gigabit link on a small node.
const LEVEL: i32 = 1;

/// zstd's recommended output buffer size for streaming.
const OUT: usize = 128 * 1024;

/// A stream that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("zstd")]
    Zstd(#[source] std::io::Error),
    #[error("the stream ended inside a zstd frame")]
    Truncated,
}

/// The source's encoder.
pub enum Encoder {
    Identity,
    Zstd(Box<ZEncoder<'static>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Identity => "Encoder::Identity",
            Self::Zstd(_) => "Encoder::Zstd",
        })
    }
}

impl Encoder {
    pub fn new(compression: WireCompression) -> Result<Self, CodecError> {
        Ok(match compression {
            WireCompression::None => Self::Identity,
            WireCompression::Zstd => {
                Self::Zstd(Box::new(ZEncoder::new(LEVEL).map_err(CodecError::Zstd)?))
            }
        })
    }

    /// The wire bytes of `chunk` (possibly none yet: the encoder buffers).
    pub fn encode(&mut self, chunk: Bytes) -> Result<Bytes, CodecError> {
        let encoder = match self {
            Self::Identity => return Ok(chunk),
            Self::Zstd(e) => e,
        };
        let mut wire = Vec::new();
        let mut input = InBuffer::around(&chunk);
        let mut buf = vec![0u8; OUT];
        while input.pos() < chunk.len() {
            let mut output = OutBuffer::around(&mut buf[..]);
            encoder
                .run(&mut input, &mut output)
                .map_err(CodecError::Zstd)?;
            wire.extend_from_slice(output.as_slice());
        }
        Ok(wire.into())
    }

    /// What the encoder still holds, and the end of the frame, at the end of the stream.
    pub fn finish(&mut self) -> Result<Bytes, CodecError> {
        let encoder = match self {
            Self::Identity => return Ok(Bytes::new()),
            Self::Zstd(e) => e,
        };
        let mut wire = Vec::new();
        let mut buf = vec![0u8; OUT];
        loop {
            let mut output = OutBuffer::around(&mut buf[..]);
            let left = encoder
                .finish(&mut output, true)
                .map_err(CodecError::Zstd)?;
            wire.extend_from_slice(output.as_slice());
            if left == 0 {
                return Ok(wire.into());
            }
        }
    }
}

/// The target's decoder.
pub enum Decoder {
    Identity,
    Zstd {
        decoder: Box<ZDecoder<'static>>,
        /// zstd's hint after the last input: 0 when a frame just ended.
        inside_frame: bool,
    },
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Identity => "Decoder::Identity",
            Self::Zstd { .. } => "Decoder::Zstd",
        })
    }
}

impl Decoder {
    pub fn new(compression: WireCompression) -> Result<Self, CodecError> {
        Ok(match compression {
            WireCompression::None => Self::Identity,
            WireCompression::Zstd => Self::Zstd {
                decoder: Box::new(ZDecoder::new().map_err(CodecError::Zstd)?),
                inside_frame: false,
            },
        })
    }

    pub fn decode<'a>(&mut self, wire: &'a [u8]) -> Result<Cow<'a, [u8]>, CodecError> {
        let (decoder, inside_frame) = match self {
            Self::Identity => return Ok(Cow::Borrowed(wire)),
            Self::Zstd {
                decoder,
                inside_frame,
            } => (decoder, inside_frame),
        };
        let mut plain = Vec::new();
        let mut input = InBuffer::around(wire);
        let mut buf = vec![0u8; OUT];
        loop {
            let mut output = OutBuffer::around(&mut buf[..]);
            let consumed_before = input.pos();
            let hint = decoder
                .run(&mut input, &mut output)
                .map_err(CodecError::Zstd)?;
            // A call that moved nothing only announces the next frame's header: it says
            // nothing about whether the last frame was whole.
            if input.pos() > consumed_before || output.pos() > 0 {
                *inside_frame = hint != 0;
            }
            let full = output.pos() == OUT;
            plain.extend_from_slice(output.as_slice());
            // Done when the input is used up and the decoder had room to spare (nothing
            // more is waiting inside it).
            if input.pos() == wire.len() && !full {
                return Ok(Cow::Owned(plain));
            }
        }
    }

    /// Fails when the stream ended inside a compressed frame.
    pub fn finish(&mut self) -> Result<(), CodecError> {
        match self {
            Self::Zstd {
                inside_frame: true, ..
            } => Err(CodecError::Truncated),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a repeating pattern with a counter in it.
        (0..len)
            .map(|i| ((i / 7) % 251) as u8 ^ (i % 3) as u8)
            .collect()
    }

    fn round_trip(compression: WireCompression, chunks: &[usize], wire_split: usize) -> Vec<u8> {
        let mut enc = Encoder::new(compression).expect("encoder");
        let mut wire = Vec::new();
        for &n in chunks {
            wire.extend(enc.encode(sample(n).into()).expect("encode"));
        }
        wire.extend(enc.finish().expect("finish"));
        let mut dec = Decoder::new(compression).expect("decoder");
        let mut plain = Vec::new();
        for piece in wire.chunks(wire_split) {
            plain.extend_from_slice(&dec.decode(piece).expect("decode"));
        }
        dec.finish().expect("whole");
        plain
    }

    #[test]
    fn zstd_round_trips_whatever_the_chunk_and_frame_sizes() {
        let chunks = [1, 300_000, 64 * 1024, 0, 5];
        let expected: Vec<u8> = chunks.iter().flat_map(|&n| sample(n)).collect();
        for split in [1, 1000, 1 << 20] {
            assert_eq!(round_trip(WireCompression::Zstd, &chunks, split), expected);
            assert_eq!(round_trip(WireCompression::None, &chunks, split), expected);
        }
    }

    #[test]
    fn zstd_compresses_and_a_truncated_stream_is_caught() {
        let mut enc = Encoder::new(WireCompression::Zstd).expect("encoder");
        let mut wire = enc.encode(sample(1 << 20).into()).expect("encode").to_vec();
        wire.extend(enc.finish().expect("finish"));
        assert!(wire.len() < (1 << 20) / 4, "{}", wire.len());
        let mut dec = Decoder::new(WireCompression::Zstd).expect("decoder");
        let _ = dec
            .decode(&wire[..wire.len() / 2])
            .expect("a prefix decodes");
        assert!(matches!(dec.finish(), Err(CodecError::Truncated)));
    }

    #[test]
    fn garbage_does_not_decode() {
        let mut dec = Decoder::new(WireCompression::Zstd).expect("decoder");
        assert!(dec.decode(b"this is not zstd at all").is_err());
    }
}
