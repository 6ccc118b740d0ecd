//! The AOF's command part read item by item, as Redis's loader reads it: a command
//! (`*<argc>` then `argc` bulks `$<len>`), or an annotation line (`#...`; `#TS:<unix
//! seconds>` when `aof-timestamp-enabled yes` wrote it). Each command is copied as it
//! is read into a sink, without its annotations: the pre-scan copies into
//! `std::io::sink()`, the replay into the command stream's channel. Nothing is held
//! whole: a bulk is copied through in pieces.
//!
//! [`scan_file`] reads one file's command part and says where the replay of it must
//! end: at its end, at the first annotation later than `--until` (before the MULTI
//! block it falls in, if any), or, when the file ends inside a command or a MULTI
//! block, at the last complete command outside a block (what Redis's
//! `aof-load-truncated` keeps).

use std::io::{self, BufRead, Read, Write};

use crate::resp::Limits;

/// One item of the command part.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    /// A command, and what it does to a MULTI/EXEC block.
    Command { block: Block },
    /// An annotation line; its timestamp when it is `#TS:<seconds>`.
    Annotation(Option<i64>),
}

/// What a command does to a MULTI/EXEC block.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Block {
    Opens,
    Closes,
    Neither,
}

/// Why the command part could not be read.
#[derive(Debug)]
pub(super) enum ScanError {
    /// Not what Redis writes, at byte `at` of the file.
    Corrupt {
        at: u64,
        what: String,
    },
    /// The file ends inside a command or a MULTI block: `end` is the end of the last
    /// complete command outside a block, `len` the file's length.
    Truncated {
        end: u64,
        len: u64,
        inside_multi: bool,
    },
    Io(io::Error),
}

/// Where one file's replay ends, and what its scan saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FileScan {
    /// The replay of this file stops at this byte of it.
    pub end: u64,
    /// Commands before `end`.
    pub commands: u64,
    /// `#TS:` annotations seen (before the cut, if any).
    pub stamps: u64,
    /// The last timestamp seen before `end`.
    pub last_stamp: Option<i64>,
    /// True when `--until` cut this file: no later file is replayed.
    pub cut_by_until: bool,
}

/// Reads the command part of a file from byte `start` (after its RDB preamble, if
/// any) to its end or the cut, copying its commands into `sink`.
pub(super) fn scan_file<R: BufRead, W: Write>(
    input: R,
    start: u64,
    until: Option<i64>,
    limits: &Limits,
    sink: &mut W,
) -> Result<FileScan, ScanError> {
    let mut reader = ItemReader {
        input,
        offset: start,
        limits,
    };
    let mut scan = FileScan {
        end: start,
        ..FileScan::default()
    };
    // The start of the open MULTI block, and the commands before it.
    let mut open_block: Option<(u64, u64)> = None;
    loop {
        let item_start = reader.offset;
        let item = match reader.next_item(sink) {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(ItemError::Eof) => {
                return Err(truncated(&mut reader, &scan, open_block));
            }
            Err(ItemError::Corrupt(what)) => {
                return Err(ScanError::Corrupt {
                    at: item_start,
                    what,
                })
            }
            Err(ItemError::Io(e)) => return Err(ScanError::Io(e)),
        };
        match item {
            Item::Annotation(Some(stamp)) if until.is_some_and(|until| stamp > until) => {
                scan.stamps += 1;
                scan.cut_by_until = true;
                if let Some((block_start, commands)) = open_block {
                    scan.end = block_start;
                    scan.commands = commands;
                }
                return Ok(scan);
            }
            Item::Annotation(stamp) => {
                scan.stamps += u64::from(stamp.is_some());
                scan.last_stamp = stamp.or(scan.last_stamp);
                if open_block.is_none() {
                    scan.end = reader.offset;
                }
            }
            Item::Command { block } => {
                scan.commands += 1;
                match block {
                    Block::Opens => open_block = Some((item_start, scan.commands - 1)),
                    Block::Closes => open_block = None,
                    Block::Neither => {}
                }
                if open_block.is_none() {
                    scan.end = reader.offset;
                }
            }
        }
    }
    match open_block {
        Some(_) => Err(truncated(&mut reader, &scan, open_block)),
        None => Ok(scan),
    }
}

/// The file ended inside a command or a block: where its complete part ends.
fn truncated<R: BufRead>(
    reader: &mut ItemReader<'_, R>,
    scan: &FileScan,
    open_block: Option<(u64, u64)>,
) -> ScanError {
    // Count what is left after the partial item, to name the file's length.
    let rest = io::copy(&mut reader.input, &mut io::sink()).unwrap_or(0);
    ScanError::Truncated {
        end: open_block.map_or(scan.end, |(block_start, _)| block_start),
        len: reader.offset + rest,
        inside_multi: open_block.is_some(),
    }
}

/// Why one item could not be read.
enum ItemError {
    /// The input ended inside the item.
    Eof,
    Corrupt(String),
    Io(io::Error),
}

impl From<io::Error> for ItemError {
    fn from(e: io::Error) -> ItemError {
        ItemError::Io(e)
    }
}

/// Reads items, counting the bytes it consumes.
struct ItemReader<'a, R> {
    input: R,
    offset: u64,
    limits: &'a Limits,
}

impl<R: BufRead> ItemReader<'_, R> {
    /// The next item (its command bytes copied into `sink`), `None` at a clean end.
    fn next_item<W: Write>(&mut self, sink: &mut W) -> Result<Option<Item>, ItemError> {
        if self.input.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let line = self.line()?;
        match line.first() {
            Some(b'#') => Ok(Some(Item::Annotation(annotation_stamp(&line)?))),
            Some(b'*') => {
                let argc = self.number(&line, b'*')?;
                if argc < 1 || argc > self.limits.array_len_max as u64 {
                    return Err(ItemError::Corrupt(format!("a command of {argc} arguments")));
                }
                sink.write_all(&line)?;
                self.command_body(argc, sink).map(Some)
            }
            _ => Err(ItemError::Corrupt(format!(
                "expected a command ('*') or an annotation ('#'), found {:?}",
                String::from_utf8_lossy(&line[..line.len().min(16)])
            ))),
        }
    }

    /// The `argc` bulks of a command, copied into `sink`.
    fn command_body<W: Write>(&mut self, argc: u64, sink: &mut W) -> Result<Item, ItemError> {
        let mut block = Block::Neither;
        for index in 0..argc {
            let line = self.line()?;
            let len = self.number(&line, b'$')?;
            if len > self.limits.bulk_bytes_max as u64 {
                return Err(ItemError::Corrupt(format!(
                    "an argument of {len} bytes (more than {})",
                    self.limits.bulk_bytes_max
                )));
            }
            sink.write_all(&line)?;
            if index == 0 && argc == 1 && len <= 5 {
                block = self.small_name(len, sink)?;
            } else {
                self.copy_exact(len, sink)?;
            }
            self.crlf(sink)?;
        }
        Ok(Item::Command { block })
    }

    /// A one-argument command's name (MULTI, EXEC or another), copied into `sink`.
    fn small_name<W: Write>(&mut self, len: u64, sink: &mut W) -> Result<Block, ItemError> {
        let mut name = Vec::with_capacity(len as usize);
        self.copy_exact(len, &mut name)?;
        sink.write_all(&name)?;
        Ok(if name.eq_ignore_ascii_case(b"multi") {
            Block::Opens
        } else if name.eq_ignore_ascii_case(b"exec") {
            Block::Closes
        } else {
            Block::Neither
        })
    }

    /// Exactly `len` bytes into `sink`, in pieces.
    fn copy_exact<W: Write>(&mut self, len: u64, sink: &mut W) -> Result<(), ItemError> {
        let copied = io::copy(&mut (&mut self.input).take(len), sink)?;
        self.offset += copied;
        if copied < len {
            return Err(ItemError::Eof);
        }
        Ok(())
    }

    /// The `\r\n` after a bulk.
    fn crlf<W: Write>(&mut self, sink: &mut W) -> Result<(), ItemError> {
        let mut end = Vec::with_capacity(2);
        self.copy_exact(2, &mut end)?;
        if end != b"\r\n" {
            return Err(ItemError::Corrupt(
                "an argument not followed by \\r\\n".into(),
            ));
        }
        sink.write_all(&end)?;
        Ok(())
    }

    /// One line with its `\n`, at most the limits' line length.
    fn line(&mut self) -> Result<Vec<u8>, ItemError> {
        let max = self.limits.line_bytes_max as u64;
        let mut line = Vec::new();
        let read = (&mut self.input).take(max).read_until(b'\n', &mut line)?;
        self.offset += read as u64;
        if line.last() == Some(&b'\n') {
            return Ok(line);
        }
        if (read as u64) < max {
            return Err(ItemError::Eof);
        }
        Err(ItemError::Corrupt(format!(
            "a line longer than {max} bytes"
        )))
    }

    /// The number after `kind` in a `<kind><digits>\r\n` line.
    fn number(&self, line: &[u8], kind: u8) -> Result<u64, ItemError> {
        let digits = line
            .strip_prefix(&[kind])
            .and_then(|l| l.strip_suffix(b"\r\n"));
        digits
            .filter(|d| !d.is_empty() && d.len() <= 19 && d.iter().all(u8::is_ascii_digit))
            .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
            .ok_or_else(|| {
                ItemError::Corrupt(format!(
                    "expected '{}<number>\\r\\n', found {:?}",
                    kind as char,
                    String::from_utf8_lossy(&line[..line.len().min(24)])
                ))
            })
    }
}

/// The timestamp of a `#TS:<seconds>` line; None for another annotation.
fn annotation_stamp(line: &[u8]) -> Result<Option<i64>, ItemError> {
    let Some(rest) = line.strip_prefix(b"#TS:") else {
        return Ok(None);
    };
    let digits = rest.strip_suffix(b"\r\n").unwrap_or(rest);
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.trim().parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ItemError::Corrupt(format!(
                "a timestamp annotation that is not '#TS:<unix seconds>': {:?}",
                String::from_utf8_lossy(&line[..line.len().min(40)])
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        out
    }

    fn scan(bytes: &[u8], until: Option<i64>) -> (Result<FileScan, ScanError>, Vec<u8>) {
        let mut out = Vec::new();
        let result = scan_file(bytes, 0, until, &Limits::default(), &mut out);
        (result, out)
    }

    fn aof() -> Vec<u8> {
        let mut file = b"#TS:100\r\n".to_vec();
        file.extend(command(&["SELECT", "0"]));
        file.extend(command(&["SET", "a", "1"]));
        file.extend(b"#TS:101\r\n");
        file.extend(command(&["MULTI"]));
        file.extend(command(&["SET", "b", "2"]));
        file.extend(command(&["EXEC"]));
        file.extend(b"#TS:102\r\n");
        file.extend(command(&["SET", "c", "3"]));
        file
    }

    #[test]
    fn annotations_are_left_out_of_the_commands() {
        let file = aof();
        let (result, out) = scan(&file, None);
        let scan = result.expect("scans");
        assert_eq!(scan.end, file.len() as u64);
        assert_eq!(scan.commands, 6);
        assert_eq!(scan.stamps, 3);
        assert_eq!(scan.last_stamp, Some(102));
        assert!(!out.windows(3).any(|w| w == b"#TS"));
        let mut expected = command(&["SELECT", "0"]);
        expected.extend(command(&["SET", "a", "1"]));
        assert!(out.starts_with(&expected));
    }

    #[test]
    fn until_stops_before_the_first_later_stamp() {
        let file = aof();
        let (result, _) = scan(&file, Some(101));
        let found = result.expect("scans");
        assert!(found.cut_by_until);
        assert_eq!(found.commands, 5);
        let cut = file
            .windows(9)
            .position(|w| w == b"#TS:102\r\n")
            .expect("stamp");
        assert_eq!(found.end, cut as u64);
        let (result, _) = scan(&file, Some(99));
        assert_eq!(result.expect("scans").end, 0);
    }

    #[test]
    fn a_stamp_inside_a_block_cuts_before_the_block() {
        let mut file = command(&["SET", "a", "1"]);
        let block = file.len() as u64;
        file.extend(command(&["MULTI"]));
        file.extend(b"#TS:200\r\n");
        file.extend(command(&["SET", "b", "2"]));
        file.extend(command(&["EXEC"]));
        let (result, _) = scan(&file, Some(150));
        let scan = result.expect("scans");
        assert_eq!((scan.end, scan.commands), (block, 1));
    }

    #[test]
    fn a_cut_command_is_a_truncated_tail_at_the_last_complete_one() {
        let file = aof();
        let last = file.len() - command(&["SET", "c", "3"]).len();
        for cut in last + 1..file.len() {
            match scan(&file[..cut], None).0 {
                Err(ScanError::Truncated { end, len, .. }) => {
                    assert_eq!(end, last as u64, "cut at {cut}");
                    assert_eq!(len, cut as u64);
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_ending_inside_a_block_is_truncated_before_it() {
        let mut file = command(&["SET", "a", "1"]);
        let block = file.len() as u64;
        file.extend(command(&["MULTI"]));
        file.extend(command(&["SET", "b", "2"]));
        match scan(&file, None).0 {
            Err(ScanError::Truncated {
                end, inside_multi, ..
            }) => assert_eq!((end, inside_multi), (block, true)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_records_name_their_offset() {
        let mut file = command(&["SET", "a", "1"]);
        let at = file.len() as u64;
        file.extend(b"+OK\r\n");
        file.extend(command(&["SET", "b", "2"]));
        match scan(&file, None).0 {
            Err(ScanError::Corrupt { at: found, .. }) => assert_eq!(found, at),
            other => panic!("{other:?}"),
        }
        let bad_crlf = b"*1\r\n$4\r\nPINGxx".to_vec();
        assert!(matches!(
            scan(&bad_crlf, None).0,
            Err(ScanError::Corrupt { at: 0, .. })
        ));
        let bad_len = b"*1\r\n$x\r\n".to_vec();
        assert!(matches!(
            scan(&bad_len, None).0,
            Err(ScanError::Corrupt { .. })
        ));
        let bad_stamp = b"#TS:soon\r\n".to_vec();
        assert!(matches!(
            scan(&bad_stamp, None).0,
            Err(ScanError::Corrupt { .. })
        ));
    }

    #[test]
    fn an_empty_file_is_an_empty_scan() {
        let scan = scan(b"", Some(5)).0.expect("scans");
        assert_eq!(scan, FileScan::default());
    }
}
