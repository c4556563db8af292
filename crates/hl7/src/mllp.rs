//! MLLP framing, sans IO: a message travels as `0x0B <message> 0x1C 0x0D`.
//!
//! [`FrameDecoder`] takes bytes as they arrive and yields whole frames. A
//! frame longer than its limit is never buffered whole: the decoder keeps
//! the first bytes (enough to read MSH and answer it), drops the rest up
//! to the end block and reports [`Frame::TooLarge`]. Bytes between frames
//! that are not a start block are skipped.

/// Start block (VT).
pub const START_BLOCK: u8 = 0x0b;
/// End block (FS), followed by a carriage return.
pub const END_BLOCK: u8 = 0x1c;
const CARRIAGE_RETURN: u8 = 0x0d;
/// How much of an oversized frame is kept, to read its MSH.
const HEAD_BYTES: usize = 1024;

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message, without the framing bytes.
    Message(Vec<u8>),
    /// A frame past the limit, with its first bytes (to read MSH from).
    TooLarge { head: Vec<u8>, limit: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a start block.
    Between,
    /// Inside a frame.
    Inside,
    /// Inside a frame past the limit: dropping bytes up to its end.
    Dropping,
}

/// Splits a byte stream into MLLP frames.
#[derive(Debug)]
pub struct FrameDecoder {
    max_bytes: usize,
    state: State,
    buffer: Vec<u8>,
    /// Right after an end block: its carriage return may come next.
    after_end: bool,
    /// Bytes skipped between frames, for the connection's log.
    skipped: usize,
}

impl FrameDecoder {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            state: State::Between,
            buffer: Vec::new(),
            after_end: false,
            skipped: 0,
        }
    }

    /// Bytes skipped outside frames so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// True while a frame has begun and not ended.
    pub fn in_frame(&self) -> bool {
        self.state != State::Between
    }

    /// Feeds `bytes`, returning every frame they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut rest = bytes;
        while let Some((&byte, tail)) = rest.split_first() {
            if self.after_end {
                self.after_end = false;
                if byte == CARRIAGE_RETURN {
                    rest = tail;
                    continue;
                }
            }
            match self.state {
                State::Between => match rest.iter().position(|&b| b == START_BLOCK) {
                    Some(at) => {
                        self.skipped += at;
                        self.state = State::Inside;
                        self.buffer.clear();
                        rest = &rest[at + 1..];
                    }
                    None => {
                        self.skipped += rest.len();
                        rest = &[];
                    }
                },
                State::Inside | State::Dropping => {
                    let end = rest
                        .iter()
                        .position(|&b| b == END_BLOCK || b == START_BLOCK);
                    let (body, found) = match end {
                        Some(at) => (&rest[..at], Some(rest[at])),
                        None => (rest, None),
                    };
                    if self.state == State::Inside {
                        let room = self.max_bytes.saturating_sub(self.buffer.len());
                        if body.len() > room {
                            let keep = HEAD_BYTES.saturating_sub(self.buffer.len()).min(body.len());
                            self.buffer.extend_from_slice(&body[..keep]);
                            self.buffer.truncate(HEAD_BYTES);
                            self.state = State::Dropping;
                        } else {
                            self.buffer.extend_from_slice(body);
                        }
                    }
                    rest = &rest[body.len()..];
                    match found {
                        Some(END_BLOCK) => {
                            let body = std::mem::take(&mut self.buffer);
                            frames.push(match self.state {
                                State::Dropping => Frame::TooLarge {
                                    head: body,
                                    limit: self.max_bytes,
                                },
                                _ => Frame::Message(body),
                            });
                            self.state = State::Between;
                            self.after_end = true;
                            rest = &rest[1..];
                        }
                        Some(_) => {
                            // A start block inside a frame: the sender gave up
                            // on the last one; its bytes are skipped.
                            self.skipped += self.buffer.len();
                            self.buffer.clear();
                            self.state = State::Inside;
                            rest = &rest[1..];
                        }
                        None => {}
                    }
                }
            }
        }
        frames
    }
}

/// `message` framed for MLLP.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 3);
    framed.push(START_BLOCK);
    framed.extend_from_slice(message);
    framed.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    framed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut stream = frame(b"MSH|one");
        stream.extend(frame(b"MSH|two"));
        for split in 0..stream.len() {
            let mut decoder = FrameDecoder::new(100);
            let mut frames = decoder.push(&stream[..split]);
            frames.extend(decoder.push(&stream[split..]));
            assert_eq!(
                frames,
                [
                    Frame::Message(b"MSH|one".to_vec()),
                    Frame::Message(b"MSH|two".to_vec())
                ],
                "split at {split}"
            );
            assert!(!decoder.in_frame());
            assert_eq!(decoder.skipped(), 0);
        }
    }

    #[test]
    fn bytes_between_frames_are_skipped() {
        let mut decoder = FrameDecoder::new(100);
        let mut stream = b"noise\r\n".to_vec();
        stream.extend(frame(b"MSH|a"));
        stream.extend(b"\n");
        stream.extend(frame(b"MSH|b"));
        assert_eq!(decoder.push(&stream).len(), 2);
        assert_eq!(decoder.skipped(), 8);
        // An end block without its carriage return still ends the frame.
        let frames = decoder.push(b"\x0bMSH|c\x1c\x0bMSH|d\x1c\r");
        assert_eq!(
            frames,
            [
                Frame::Message(b"MSH|c".to_vec()),
                Frame::Message(b"MSH|d".to_vec())
            ]
        );
    }

    #[test]
    fn an_oversized_frame_is_dropped_not_buffered() {
        let mut decoder = FrameDecoder::new(10);
        let big = vec![b'x'; 5000];
        let mut frames = decoder.push(&[START_BLOCK]);
        for chunk in big.chunks(7) {
            frames.extend(decoder.push(chunk));
            assert!(decoder.buffer.len() <= HEAD_BYTES);
        }
        frames.extend(decoder.push(&[END_BLOCK, CARRIAGE_RETURN]));
        frames.extend(decoder.push(&frame(b"MSH|ok")));
        match &frames[..] {
            [Frame::TooLarge { head, limit: 10 }, Frame::Message(ok)] => {
                assert!(!head.is_empty() && head.len() <= HEAD_BYTES);
                assert_eq!(ok, b"MSH|ok");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_start_block_abandons_a_partial_frame() {
        let mut decoder = FrameDecoder::new(100);
        let frames = decoder.push(b"\x0bMSH|partial\x0bMSH|whole\x1c\r");
        assert_eq!(frames, [Frame::Message(b"MSH|whole".to_vec())]);
        assert_eq!(decoder.skipped(), 11);
    }
}
