//! Compression of the stream on the wire. The source encodes chunk by chunk as it reads
//! `zfs send`; the target decodes chunk by chunk as frames arrive (the transport does not
//! keep chunk boundaries, so the format must be a stream, not framed chunks).

use std::borrow::Cow;

use tidepool_wire::transfer::WireCompression;

/// Whether this build can encode and decode zstd.
pub const ZSTD_AVAILABLE: bool = false;

/// A stream that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("this agent was built without {0:?} compression")]
    Unsupported(WireCompression),
}

/// The source's encoder.
#[derive(Debug)]
pub enum Encoder {
    Identity,
}

impl Encoder {
    pub fn new(compression: WireCompression) -> Result<Self, CodecError> {
        match compression {
            WireCompression::None => Ok(Self::Identity),
            other => Err(CodecError::Unsupported(other)),
        }
    }

    /// The wire bytes of `chunk` (possibly none yet: an encoder may buffer).
    pub fn encode(&mut self, chunk: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        match self {
            Self::Identity => Ok(chunk),
        }
    }

    /// What the encoder still holds, at the end of the stream.
    pub fn finish(&mut self) -> Result<Vec<u8>, CodecError> {
        match self {
            Self::Identity => Ok(Vec::new()),
        }
    }
}

/// The target's decoder.
#[derive(Debug)]
pub enum Decoder {
    Identity,
}

impl Decoder {
    /// Only encodings the route admitted reach here.
    pub fn new(compression: WireCompression) -> Self {
        match compression {
            WireCompression::None | WireCompression::Zstd => Self::Identity,
        }
    }

    pub fn decode<'a>(&mut self, wire: &'a [u8]) -> Result<Cow<'a, [u8]>, CodecError> {
        match self {
            Self::Identity => Ok(Cow::Borrowed(wire)),
        }
    }

    /// Fails when the stream ended inside a compressed frame.
    pub fn finish(&mut self) -> Result<(), CodecError> {
        match self {
            Self::Identity => Ok(()),
        }
    }
}
