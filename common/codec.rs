//! The gRPC codec of every testfleet service: prost's, except that each
//! message's buffer is sized once, before the message is written into it.
//!
//! prost's own encoder writes into tonic's buffer as it goes, so a large
//! message (a 20,000-task suite's final report is tens of MB) grows the
//! buffer by doubling: every step a fresh allocation and a copy of all so
//! far, about twice the message in copies and fresh pages. Sizing first
//! costs nothing extra: prost computes the length before encoding anyway.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, EncodeBuf};
use tonic::Status;
use tonic_prost::ProstDecoder;

/// Named by build.rs (`codec_path`) for every generated client and server.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    // The decoder already sizes its buffer from the frame's length prefix.
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Encodes a message into a buffer reserved for its whole length.
#[derive(Debug, Clone)]
pub struct SizedEncoder<T>(PhantomData<T>);

impl<T: Message> tonic::codec::Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let len = item.encoded_len();
        buf.reserve(len);
        // What `Message::encode` does after its own `encoded_len`, whose
        // only check (room for `len` bytes) a growable buffer always passes.
        item.encode_raw(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use axum::body::HttpBody;
    use tonic::codec::EncodeBody;

    /// What tonic sends for `msg`: the 5-byte gRPC prefix, then the message.
    async fn on_the_wire(msg: proto::HelloAck) -> Vec<u8> {
        let source = futures::stream::iter([Ok::<_, Status>(msg)]);
        let body = EncodeBody::new_client(SizedEncoder(PhantomData), source, None, None);
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = futures::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            if let Ok(data) = frame.expect("encodes").into_data() {
                out.extend_from_slice(&data);
            }
        }
        out
    }

    #[tokio::test]
    async fn writes_what_prost_writes() {
        let msg = proto::HelloAck {
            orchestrator_id: "orchestrator".repeat(10_000),
            heartbeat_interval_ms: 1000,
        };
        let wire = on_the_wire(msg.clone()).await;
        let expected = msg.encode_to_vec();
        assert_eq!(wire[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize,
            expected.len()
        );
        assert_eq!(&wire[5..], &expected[..]);
    }
}
