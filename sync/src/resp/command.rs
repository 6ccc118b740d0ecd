//! The fast path for the replication stream and for client requests: commands, which
//! are arrays of bulk strings (or inline text lines), each with its exact length on the
//! wire, because the replication offset counts every byte.
//!
//! [`CommandDecoder`] walks the headers once, remembering where each argument lies;
//! when the whole command is there it splits those bytes off the buffer and hands out
//! the arguments as `Bytes` slices of them (no copy). When a command is incomplete the
//! decoder keeps the arguments found so far and resumes after them on the next call,
//! so a huge command arriving in many reads is walked once, not once per read.
//!
//! What Redis accepts (networking.c, processMultibulkBuffer / processInlineBuffer), we
//! accept: `*<n>` with n <= 0 is an empty request and is skipped; a line not starting
//! with `*` is an inline command split like `sdssplitargs` (quotes and escapes), and an
//! empty inline line is a keepalive newline. We are stricter in one place: the `\r\n`
//! after a bulk payload is checked (Redis skips two bytes blindly), because on a
//! replication link a wrong byte there means the offsets are already out of step.
//!
//! How it fits: [`super::io`] (the replica link's [`super::CommandStream`])
//! decodes commands with it. It must never miscount a byte (the offset is a
//! claim about the source) and never copy an argument.

use bytes::{Buf, Bytes, BytesMut};

use super::decode::{fail, finish, Cursor, Step, Stop};
use super::error::{RespError, RespErrorKind};
use super::frame::Status;
use super::Limits;

/// One command: its arguments and how many bytes it took on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The arguments, name first. Never empty.
    pub argv: Vec<Bytes>,
    /// Exact length on the wire, `\r\n`s included.
    pub wire_bytes: usize,
    /// Sent as an inline text line rather than an array of bulk strings. A primary
    /// never does that; Redis drops such a primary link as desynchronised.
    pub inline: bool,
}

impl Command {
    /// The command name (first argument) as sent.
    pub fn name(&self) -> &[u8] {
        self.argv.first().map(|b| &b[..]).unwrap_or(b"")
    }

    /// Is this the command `name` (ASCII case-insensitive)?
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The arguments after the name.
    pub fn args(&self) -> &[Bytes] {
        self.argv.get(1..).unwrap_or(&[])
    }
}

/// What the front of a command stream held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A command.
    Command(Command),
    /// Bytes that carry no command: a bare `\n` or `\r\n` (keepalive), a line of only
    /// spaces, or `*0\r\n` / `*-1\r\n`. Redis skips them; their length is still in
    /// the `Status`, because they still move the offset.
    Blank,
}

/// Partial progress on a multibulk command, valid while the caller only appends.
#[derive(Debug, Default)]
struct Progress {
    /// Arguments announced by the `*` header.
    argc: usize,
    /// Where the next argument header starts.
    pos: usize,
    /// Payload ranges of the arguments found so far.
    args: Vec<(usize, usize)>,
}

/// Incremental command decoder with reusable scratch space.
///
/// Contract: between a call that returned `Incomplete` and the next call, the caller
/// may only append to the buffer (as reading does); anything else needs [`reset`].
///
/// [`reset`]: CommandDecoder::reset
#[derive(Debug, Default)]
pub struct CommandDecoder {
    limits: Limits,
    progress: Option<Progress>,
    spare: Vec<(usize, usize)>,
}

impl CommandDecoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> CommandDecoder {
        CommandDecoder {
            limits,
            progress: None,
            spare: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forget partial progress (after the buffer was changed other than by appending).
    pub fn reset(&mut self) {
        if let Some(p) = self.progress.take() {
            self.recycle(p.args);
        }
    }

    /// At least how many more bytes the command in progress needs, when known: lets a
    /// reader reserve room for a big argument in one go. `0` when unknown.
    pub fn bytes_needed_hint(&self, buf: &[u8]) -> usize {
        let Some(p) = &self.progress else { return 0 };
        let mut cur = Cursor::new(buf, p.pos, &self.limits);
        if !matches!(cur.byte(), Ok(b'$')) {
            return 0;
        }
        match cur.length("bulk_bytes_max", self.limits.bulk_bytes_max) {
            Ok(Some(len)) => (cur.pos + len + 2).saturating_sub(buf.len()),
            _ => 0,
        }
    }

    /// Decode one entry from the front of `buf`; on `Complete` its bytes are consumed.
    /// Error offsets count from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Status<Entry>, RespError> {
        let Some(&first) = buf.first() else {
            return Ok(Status::Incomplete);
        };
        if first != b'*' {
            self.reset();
            return self.decode_inline(buf);
        }
        let step = self.multibulk(buf);
        let progress = match step {
            Ok(()) => self.progress.take(),
            Err(Stop::Incomplete) => return Ok(Status::Incomplete),
            Err(Stop::Error(e)) => {
                self.reset();
                return Err(e);
            }
        };
        let Some(p) = progress else {
            return Ok(Status::Incomplete);
        };
        let len = p.pos;
        let src = buf.split_to(len).freeze();
        let entry = if p.argc == 0 {
            Entry::Blank
        } else {
            let argv = p.args.iter().map(|&(s, e)| src.slice(s..e)).collect();
            Entry::Command(Command {
                argv,
                wire_bytes: len,
                inline: false,
            })
        };
        self.recycle(p.args);
        Ok(Status::Complete(entry, len))
    }

    fn recycle(&mut self, mut args: Vec<(usize, usize)>) {
        args.clear();
        if args.capacity() > self.spare.capacity() {
            self.spare = args;
        }
    }

    /// Walk the multibulk at the front of `buf`, resuming from saved progress.
    fn multibulk(&mut self, buf: &[u8]) -> Step<()> {
        let limits = &self.limits;
        let mut p = match self.progress.take() {
            Some(p) => p,
            None => {
                let mut cur = Cursor::new(buf, 1, limits);
                let argc = cur.integer()?;
                if argc > limits.array_len_max as i64 {
                    return fail(
                        1,
                        RespErrorKind::TooLong {
                            limit: "array_len_max",
                            len: argc as u64,
                            max: limits.array_len_max as u64,
                        },
                    );
                }
                let argc = argc.max(0) as usize;
                let mut args = std::mem::take(&mut self.spare);
                args.clear();
                args.reserve(cur.capacity_for(argc));
                Progress {
                    argc,
                    pos: cur.pos,
                    args,
                }
            }
        };
        let mut cur = Cursor::new(buf, p.pos, limits);
        let result = (|| {
            while p.args.len() < p.argc {
                let at = cur.pos;
                match cur.byte()? {
                    b'$' => {}
                    found => {
                        return fail(
                            at,
                            RespErrorKind::BadPrefix {
                                found,
                                expected: "'$' (a bulk string argument)",
                            },
                        )
                    }
                }
                let Some(len) = cur.length("bulk_bytes_max", limits.bulk_bytes_max)? else {
                    return fail(at + 1, RespErrorKind::UnexpectedNull);
                };
                let range = cur.payload(len)?;
                p.args.push(range);
                p.pos = cur.pos;
            }
            Ok(())
        })();
        // Keep what was found even when incomplete; p.pos is after the last whole arg.
        self.progress = Some(p);
        result
    }

    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Status<Entry>, RespError> {
        let max = self.limits.inline_bytes_max;
        let window = &buf[..buf.len().min(max.saturating_add(1))];
        let Some(nl) = memchr::memchr(b'\n', window) else {
            if window.len() > max {
                return Err(RespError::new(
                    0,
                    RespErrorKind::TooLong {
                        limit: "inline_bytes_max",
                        len: window.len() as u64,
                        max: max as u64,
                    },
                ));
            }
            return Ok(Status::Incomplete);
        };
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let argv = finish(split_inline(line), || nl + 1)?;
        let Status::Complete(argv, len) = argv else {
            return Ok(Status::Incomplete);
        };
        buf.advance(len);
        if argv.is_empty() {
            return Ok(Status::Complete(Entry::Blank, len));
        }
        let command = Command {
            argv,
            wire_bytes: len,
            inline: true,
        };
        Ok(Status::Complete(Entry::Command(command), len))
    }
}

/// Split an inline line as Redis's `sdssplitargs` does: whitespace separates
/// arguments; `"..."` takes `\n \r \t \b \a \\ \" \xHH` escapes; `'...'` takes `\'`; a
/// closing quote must be followed by whitespace or the end.
fn split_inline(line: &[u8]) -> Step<Vec<Bytes>> {
    let is_space = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c);
    let mut argv = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(argv);
        }
        let mut arg = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let Some(&c) = line.get(i) else {
                if in_dq || in_sq {
                    return fail(i, RespErrorKind::UnbalancedQuotes);
                }
                break;
            };
            if in_dq {
                let hex = |b: u8| (b as char).to_digit(16);
                if c == b'\\' && i + 3 < line.len() && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3])) {
                        arg.push((h * 16 + l) as u8);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < line.len() {
                    arg.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                        return fail(i + 1, RespErrorKind::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                arg.push(c);
                i += 1;
            } else if in_sq {
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    arg.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                        return fail(i + 1, RespErrorKind::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                arg.push(c);
                i += 1;
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => arg.push(c),
                }
                i += 1;
            }
        }
        argv.push(Bytes::from(arg));
    }
}
