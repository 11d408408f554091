//! The final report's JSON text, shared rather than copied.
//!
//! A 20,000-task report is about 21 MB. The orchestrator builds it once, in
//! pieces, and the same pieces go to report.json, to `GetFinalReport` and to
//! `/api/v1/final-report`; a client receives it as one piece, cut from the
//! frame it arrived in. Every copy of that size costs tens of milliseconds
//! (most of it first-touch page faults), so this module exists to avoid them.

use std::borrow::Cow;
use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

/// Text in pieces. The pieces' boundaries may fall inside a UTF-8
/// character, so the text is checked as a whole, by [`ReportText::to_str`].
#[derive(Clone, Default)]
pub struct ReportText {
    /// Never an empty piece.
    chunks: Vec<Bytes>,
}

impl ReportText {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The whole text: borrowed when it is one piece (as a client receives
    /// it), joined otherwise.
    pub fn to_str(&self) -> Result<Cow<'_, str>, std::str::Utf8Error> {
        match self.chunks.as_slice() {
            [] => Ok(Cow::Borrowed("")),
            [one] => std::str::from_utf8(one).map(Cow::Borrowed),
            many => String::from_utf8(many.concat())
                .map(Cow::Owned)
                .map_err(|e| e.utf8_error()),
        }
    }
}

impl From<String> for ReportText {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<Bytes> for ReportText {
    fn from(b: Bytes) -> Self {
        ReportText {
            chunks: if b.is_empty() { Vec::new() } else { vec![b] },
        }
    }
}

/// Equal text, however it is cut into pieces.
impl PartialEq for ReportText {
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let (mut a, mut b) = (self.chunks.iter(), other.chunks.iter());
        let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
        loop {
            if x.is_empty() {
                match a.next() {
                    Some(c) => x = c,
                    None => return true,
                }
            }
            if y.is_empty() {
                y = b.next().expect("equal lengths");
            }
            let n = x.len().min(y.len());
            if x[..n] != y[..n] {
                return false;
            }
            (x, y) = (&x[n..], &y[n..]);
        }
    }
}

impl Eq for ReportText {}

impl fmt::Debug for ReportText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self
            .chunks
            .first()
            .map_or(&[][..], |c| &c[..c.len().min(60)]);
        write!(
            f,
            "ReportText({} bytes in {} pieces: {:?}…)",
            self.len(),
            self.chunks.len(),
            String::from_utf8_lossy(head)
        )
    }
}

/// Builds a [`ReportText`] as an [`io::Write`], in pieces of `piece` bytes,
/// and hands each finished piece to `on_piece` (which may write it out while
/// the next is built).
pub struct ReportTextWriter<F: FnMut(&Bytes)> {
    done: Vec<Bytes>,
    /// Always `piece` bytes of capacity, so appending never reallocates.
    current: Vec<u8>,
    piece: usize,
    on_piece: F,
}

impl<F: FnMut(&Bytes)> ReportTextWriter<F> {
    pub fn new(piece: usize, on_piece: F) -> Self {
        let piece = piece.max(1);
        ReportTextWriter {
            done: Vec::new(),
            current: Vec::with_capacity(piece),
            piece,
            on_piece,
        }
    }

    fn hand_over(&mut self, piece: Vec<u8>) {
        self.hand_over_shared(Bytes::from(piece));
    }

    fn hand_over_shared(&mut self, piece: Bytes) {
        (self.on_piece)(&piece);
        self.done.push(piece);
    }

    #[cold]
    #[inline(never)]
    fn write_across_pieces(&mut self, mut data: &[u8]) {
        while data.len() >= self.piece - self.current.len() {
            let (head, rest) = data.split_at(self.piece - self.current.len());
            self.current.extend_from_slice(head);
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(self.piece));
            self.hand_over(full);
            data = rest;
        }
        self.current.extend_from_slice(data);
    }

    /// Appends `text` as it is cut: the piece being built is handed over
    /// as it stands (shorter than the others), then each of `text`'s.
    pub fn append(&mut self, text: ReportText) {
        if !self.current.is_empty() {
            let partial = std::mem::replace(&mut self.current, Vec::with_capacity(self.piece));
            self.hand_over(partial);
        }
        for piece in text.chunks {
            self.hand_over_shared(piece);
        }
    }

    /// The text, its last piece handed over too.
    pub fn finish(mut self) -> ReportText {
        let last = std::mem::take(&mut self.current);
        if !last.is_empty() {
            self.hand_over(last);
        }
        ReportText { chunks: self.done }
    }
}

impl<F: FnMut(&Bytes)> io::Write for ReportTextWriter<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    /// A serialiser writes a few bytes at a time, millions of times for a
    /// large report: this is inlined into it, and the common case is one
    /// comparison and a copy.
    #[inline(always)]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() < self.piece - self.current.len() {
            self.current.extend_from_slice(data);
        } else {
            self.write_across_pieces(data);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `testfleet.v1.FinalReport`, written by hand (build.rs maps the message
/// here) so that its `report_json` is a [`ReportText`]: the server encodes
/// the pieces it keeps, and a client decodes the text without copying it.
/// On the wire it is exactly the generated message; `report_json` stays a
/// proto `string`, so grpcurl shows it as text.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct FinalReport {
    pub suite_id: String,
    pub status: String,
    /// The report document (the same JSON the report file holds).
    pub report_json: ReportText,
}

const REPORT_JSON_TAG: u32 = 3;

impl prost::Message for FinalReport {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.suite_id.is_empty() {
            encoding::string::encode(1, &self.suite_id, buf);
        }
        if !self.status.is_empty() {
            encoding::string::encode(2, &self.status, buf);
        }
        if !self.report_json.is_empty() {
            encoding::encode_key(REPORT_JSON_TAG, WireType::LengthDelimited, buf);
            encoding::encode_varint(self.report_json.len() as u64, buf);
            for chunk in self.report_json.chunks() {
                buf.put_slice(chunk);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let named = |field| {
            move |mut e: DecodeError| {
                e.push("FinalReport", field);
                e
            }
        };
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.suite_id, buf, ctx)
                .map_err(named("suite_id")),
            2 => encoding::string::merge(wire_type, &mut self.status, buf, ctx)
                .map_err(named("status")),
            REPORT_JSON_TAG => {
                // From tonic's frame buffer this is a slice of it, not a copy.
                let mut text = Bytes::new();
                encoding::bytes::merge(wire_type, &mut text, buf, ctx)
                    .map_err(named("report_json"))?;
                self.report_json = text.into();
                Ok(())
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let text = if self.report_json.is_empty() {
            0
        } else {
            encoding::key_len(REPORT_JSON_TAG)
                + encoding::encoded_len_varint(self.report_json.len() as u64)
                + self.report_json.len()
        };
        let string = |tag, s: &String| {
            if s.is_empty() {
                0
            } else {
                encoding::string::encoded_len(tag, s)
            }
        };
        string(1, &self.suite_id) + string(2, &self.status) + text
    }

    fn clear(&mut self) {
        *self = FinalReport::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::io::Write;

    /// What prost generates for the proto's FinalReport.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(string, tag = "1")]
        suite_id: String,
        #[prost(string, tag = "2")]
        status: String,
        #[prost(string, tag = "3")]
        report_json: String,
    }

    fn pieces(text: &str, piece: usize) -> (ReportText, Vec<usize>) {
        let mut sizes = Vec::new();
        let mut w = ReportTextWriter::new(piece, |p: &Bytes| sizes.push(p.len()));
        // Written in uneven slices, as a serialiser writes.
        for part in text.as_bytes().chunks(7) {
            w.write_all(part).unwrap();
        }
        (w.finish(), sizes)
    }

    #[test]
    fn the_writer_hands_over_every_piece_in_order() {
        let text = "{\"a\":\"é\"}".repeat(50);
        let (t, sizes) = pieces(&text, 64);
        assert_eq!(t.len(), text.len());
        assert_eq!(sizes.iter().sum::<usize>(), text.len());
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 64));
        assert_eq!(t.chunks().len(), sizes.len());
        // A piece may end inside "é"; the whole is still the text.
        assert_eq!(t.to_str().unwrap(), text);
        assert_eq!(t, ReportText::from(text));
    }

    #[test]
    fn appended_text_follows_the_partial_piece_and_keeps_its_pieces() {
        let (tail, _) = pieces(&"t".repeat(100), 40);
        let mut handed = Vec::new();
        let mut w = ReportTextWriter::new(64, |p: &Bytes| handed.push(p.clone()));
        w.write_all(&[b'h'; 70]).unwrap();
        w.append(tail.clone());
        w.write_all(b"!").unwrap();
        let t = w.finish();
        assert_eq!(t.to_str().unwrap(), "h".repeat(70) + &"t".repeat(100) + "!");
        let sizes: Vec<usize> = handed.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [64, 6, 40, 40, 20, 1]);
        // Shared, not copied.
        assert_eq!(handed[2].as_ptr(), tail.chunks()[0].as_ptr());
        assert_eq!(t.chunks(), &handed[..]);
    }

    #[test]
    fn texts_compare_by_content_not_by_pieces() {
        let text = "x".repeat(1000) + "y";
        let (a, _) = pieces(&text, 10);
        let (b, _) = pieces(&text, 333);
        assert_eq!(a, b);
        let (c, _) = pieces(&("x".repeat(1000) + "z"), 333);
        assert_ne!(a, c);
        assert_ne!(a, ReportText::from("x".repeat(1000)));
        assert_eq!(ReportText::default(), ReportText::from(String::new()));
    }

    #[test]
    fn on_the_wire_it_is_the_generated_message() {
        let text = "{\"tasks\":[1,2,3]}".repeat(100);
        let ours = FinalReport {
            suite_id: "s1".into(),
            status: "completed".into(),
            report_json: pieces(&text, 50).0,
        };
        let generated = Generated {
            suite_id: "s1".into(),
            status: "completed".into(),
            report_json: text.clone(),
        };
        let bytes = ours.encode_to_vec();
        assert_eq!(bytes, generated.encode_to_vec());
        assert_eq!(ours.encoded_len(), bytes.len());
        let back = FinalReport::decode(Bytes::from(bytes)).unwrap();
        assert_eq!(back, ours);
        assert_eq!(back.report_json.chunks().len(), 1);
        assert_eq!(back.report_json.to_str().unwrap(), text);
        assert_eq!(FinalReport::default().encode_to_vec(), Vec::<u8>::new());
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_when_read() {
        let mut wire = Vec::new();
        encoding::bytes::encode(REPORT_JSON_TAG, &vec![b'{', 0xff, b'}'], &mut wire);
        let r = FinalReport::decode(wire.as_slice()).unwrap();
        assert!(r.report_json.to_str().is_err());
    }

    #[test]
    fn a_truncated_message_is_a_decode_error_naming_the_field() {
        let full = FinalReport {
            report_json: String::from("{\"a\":1}").into(),
            ..Default::default()
        }
        .encode_to_vec();
        let e = FinalReport::decode(&full[..full.len() - 2]).unwrap_err();
        assert!(e.to_string().contains("report_json"), "{e}");
    }
}
