//! `lockstep rdb inspect FILE`: reads an RDB file with the streaming parser and prints
//! it, one JSON object per key (`--format jsonl`), or counts per type and database
//! and the biggest keys (`--format summary`, what redis-rdb-tools' memory report is
//! used for). Neither holds the file or a whole key: JSON elements are printed batch
//! by batch as the parser hands them out.
//!
//! # The JSON form (lossless)
//! Every byte string is a JSON string when it is valid UTF-8, and otherwise an object
//! `{"base64": "..."}` of its bytes (standard alphabet, padded). One line per key:
//! `{"db":0,"key":B,"type":"hash","encoding":"listpack","expire_ms":null|int,
//! "idle_s":null|int,"freq":null|int,"value":V}` where V is, by type:
//! - string: B; list: [B, ...] head to tail; set: [B, ...];
//! - zset: [[B, score], ...] with a JSON number, or "inf" / "-inf" / "nan";
//! - hash: [[field B, value B], ...], or [field, value, expire_ms] for a field with a TTL;
//! - stream: {"entries": [{"id": "ms-seq", "fields": [[B, B], ...]}, ...],
//!   "length", "last_id", "first_id", "max_deleted_id", "entries_added",
//!   "groups": [{"name", "last_id", "entries_read", "pel": [{"id", "delivery_time_ms",
//!   "delivery_count"}], "consumers": [{"name", "seen_time_ms", "active_time_ms",
//!   "pending": ["ms-seq", ...]}]}]};
//! - module: {"module": name, "encver": n, "raw": {"base64": ...}}.
//!
//! Non-key records (aux fields, functions, module aux) are printed as
//! `{"aux": B, "value": B}`, `{"function": B}`, `{"module_aux": name}`.
//!
//! How it fits: `main` runs it for `lockstep rdb`; it reads through
//! `lockstep_sync::rdb` only. It never writes to the file it reads and never
//! connects to a server.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use lockstep_sync::rdb::{
    Elements, Event, HashField, KeyMeta, Kind, ParseOptions, RdbParser, StreamGroup, StreamMeta,
};
use serde_json::{json, Value as Json};

use crate::args::{RdbCommand, RdbFormat, RdbInspectArgs};

pub fn run(command: RdbCommand) -> anyhow::Result<ExitCode> {
    match command {
        RdbCommand::Inspect(args) => inspect(args),
    }
}

fn inspect(args: RdbInspectArgs) -> anyhow::Result<ExitCode> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let mut parser = RdbParser::new(
        BufReader::with_capacity(1 << 20, file),
        ParseOptions::default(),
    );
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut summary = Summary::default();
    let mut key: Option<(KeyMeta, ValueWriter)> = None;
    loop {
        let event = parser
            .next_event()
            .with_context(|| format!("{} is not a valid RDB file", args.file.display()))?;
        let Some(event) = event else { break };
        match (args.format, event) {
            (_, Event::KeyStart(meta)) => {
                if args.format == RdbFormat::Jsonl {
                    let head = json!({
                        "db": meta.db, "key": bytes(&meta.key), "type": meta.rdb_type.kind().name(),
                        "encoding": meta.rdb_type.encoding_name(), "expire_ms": meta.expire_ms,
                        "idle_s": meta.lru_idle_secs, "freq": meta.lfu_freq,
                    });
                    let text = head.to_string();
                    // Reopen the object to append the value as it streams in.
                    write!(out, "{},\"value\":", &text[..text.len() - 1])?;
                }
                let writer = ValueWriter::new(meta.rdb_type.kind());
                key = Some((meta, writer));
            }
            (RdbFormat::Jsonl, Event::Elements(batch)) => {
                let (_, writer) = key.as_mut().context("elements outside a key")?;
                writer.batch(&mut out, batch)?;
            }
            (format, Event::KeyEnd { .. }) => {
                let (meta, mut writer) = key.take().context("KeyEnd outside a key")?;
                if format == RdbFormat::Jsonl {
                    writer.close(&mut out)?;
                    writeln!(out, "}}")?;
                } else {
                    summary.add(&meta, parser.offset().saturating_sub(meta.offset));
                }
            }
            (RdbFormat::Jsonl, Event::Aux { key, value }) => writeln!(
                out,
                "{}",
                json!({"aux": bytes(&key), "value": bytes(&value)})
            )?,
            (RdbFormat::Jsonl, Event::Function { code }) => {
                writeln!(out, "{}", json!({"function": bytes(&code)}))?
            }
            (RdbFormat::Jsonl, Event::ModuleAux { name, .. }) => {
                writeln!(out, "{}", json!({"module_aux": name}))?
            }
            (format, Event::Skipped(skipped)) => {
                for s in skipped {
                    tracing::warn!(
                        "skipped {} record(s) of opcode 0x{:02x}, {} (first at byte {})",
                        s.count,
                        s.opcode,
                        s.what,
                        s.first_offset
                    );
                    if format == RdbFormat::Jsonl {
                        let line = json!({"skipped": s.opcode, "what": s.what, "count": s.count, "first_offset": s.first_offset});
                        writeln!(out, "{line}")?;
                    }
                }
            }
            (RdbFormat::Summary, Event::Header { version }) => summary.version = version,
            _ => {}
        }
    }
    if args.format == RdbFormat::Summary {
        summary.print(&mut out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A byte string in the lossless JSON form.
fn bytes(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(text) => Json::String(text.to_owned()),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

fn score(s: f64) -> Json {
    if s.is_nan() {
        json!("nan")
    } else if s == f64::INFINITY {
        json!("inf")
    } else if s == f64::NEG_INFINITY {
        json!("-inf")
    } else {
        json!(s)
    }
}

fn field(f: &HashField) -> Json {
    match f.expire_ms {
        Some(at) => json!([bytes(&f.field), bytes(&f.value), at]),
        None => json!([bytes(&f.field), bytes(&f.value)]),
    }
}

/// Prints a key's value as its batches arrive: arrays are opened at the first batch
/// and closed at the end; a stream is an object whose parts come in order (entries,
/// then the metadata, then the groups).
struct ValueWriter {
    kind: Kind,
    opened: bool,
    items: usize,
    stream_meta_done: bool,
    groups: usize,
    /// The pieces of a long string so far (its JSON form needs it whole).
    string: Vec<u8>,
}

impl ValueWriter {
    fn new(kind: Kind) -> ValueWriter {
        ValueWriter {
            kind,
            opened: false,
            items: 0,
            stream_meta_done: false,
            groups: 0,
            string: Vec::new(),
        }
    }

    fn batch(&mut self, out: &mut impl Write, batch: Elements) -> anyhow::Result<()> {
        let items: Vec<Json> = match batch {
            Elements::String(s) => {
                self.opened = true;
                write!(out, "{}", bytes(&s))?;
                return Ok(());
            }
            Elements::StringPiece {
                offset,
                total_len,
                bytes: piece,
            } => {
                self.string.extend_from_slice(&piece);
                if offset + piece.len() as u64 == total_len {
                    self.opened = true;
                    write!(out, "{}", bytes(&std::mem::take(&mut self.string)))?;
                }
                return Ok(());
            }
            Elements::Module(m) => {
                self.opened = true;
                write!(
                    out,
                    "{}",
                    json!({"module": m.name, "encver": m.encver, "raw": bytes_b64(&m.raw)})
                )?;
                return Ok(());
            }
            Elements::StreamMeta(m) => {
                self.open(out)?;
                let text = stream_meta(&m).to_string();
                write!(out, "],{},\"groups\":[", &text[1..text.len() - 1])?;
                self.stream_meta_done = true;
                return Ok(());
            }
            Elements::StreamGroup(g) => {
                let sep = if self.groups > 0 { "," } else { "" };
                write!(out, "{sep}{}", stream_group(&g))?;
                self.groups += 1;
                return Ok(());
            }
            Elements::List(v) | Elements::Set(v) => v.iter().map(|e| bytes(e)).collect(),
            Elements::ZSet(v) => v
                .iter()
                .map(|(m, s)| json!([bytes(m), score(*s)]))
                .collect(),
            Elements::Hash(v) => v.iter().map(field).collect(),
            Elements::StreamEntries(v) => v
                .iter()
                .map(|e| {
                    let fields: Vec<Json> = e
                        .fields
                        .iter()
                        .map(|(f, v)| json!([bytes(f), bytes(v)]))
                        .collect();
                    json!({"id": e.id.to_string(), "fields": fields})
                })
                .collect(),
        };
        self.open(out)?;
        for item in items {
            let sep = if self.items > 0 { "," } else { "" };
            write!(out, "{sep}{item}")?;
            self.items += 1;
        }
        Ok(())
    }

    fn open(&mut self, out: &mut impl Write) -> anyhow::Result<()> {
        if !self.opened {
            self.opened = true;
            write!(
                out,
                "{}",
                if self.kind == Kind::Stream {
                    "{\"entries\":["
                } else {
                    "["
                }
            )?;
        }
        Ok(())
    }

    fn close(&mut self, out: &mut impl Write) -> anyhow::Result<()> {
        match (self.kind, self.opened) {
            (Kind::Stream, false) => write!(out, "{{\"entries\":[],\"groups\":[]}}")?,
            (Kind::Stream, true) if !self.stream_meta_done => write!(out, "],\"groups\":[]}}")?,
            (Kind::Stream, true) => write!(out, "]}}")?,
            (Kind::String, false) => write!(out, "\"\"")?,
            (Kind::Module, false) => write!(out, "null")?,
            (Kind::String | Kind::Module, true) => {}
            (_, false) => write!(out, "[]")?,
            (_, true) => write!(out, "]")?,
        }
        Ok(())
    }
}

fn bytes_b64(b: &[u8]) -> Json {
    json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)})
}

fn stream_meta(m: &StreamMeta) -> Json {
    json!({
        "length": m.length, "last_id": m.last_id.to_string(),
        "first_id": m.first_id.map(|i| i.to_string()), "max_deleted_id": m.max_deleted_id.map(|i| i.to_string()),
        "entries_added": m.entries_added,
    })
}

fn stream_group(g: &StreamGroup) -> Json {
    json!({
        "name": bytes(&g.name), "last_id": g.last_id.to_string(), "entries_read": g.entries_read,
        "pel": g.pel.iter().map(|p| json!({"id": p.id.to_string(), "delivery_time_ms": p.delivery_time_ms, "delivery_count": p.delivery_count})).collect::<Vec<_>>(),
        "consumers": g.consumers.iter().map(|c| json!({
            "name": bytes(&c.name), "seen_time_ms": c.seen_time_ms, "active_time_ms": c.active_time_ms,
            "pending": c.pending.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Counts per type and database, and the biggest keys by serialized size.
#[derive(Default)]
struct Summary {
    version: u32,
    per_type_db: BTreeMap<(String, u64), (u64, u64)>,
    /// The 20 biggest (size, db, key), smallest first.
    biggest: Vec<(u64, u64, Vec<u8>, &'static str)>,
}

const BIGGEST_KEYS: usize = 20;

impl Summary {
    fn add(&mut self, meta: &KeyMeta, size: u64) {
        let kind = meta.rdb_type.kind().name();
        let entry = self
            .per_type_db
            .entry((kind.to_owned(), meta.db))
            .or_default();
        entry.0 += 1;
        entry.1 += size;
        if self.biggest.len() < BIGGEST_KEYS || size > self.biggest[0].0 {
            self.biggest.push((size, meta.db, meta.key.clone(), kind));
            self.biggest.sort_by_key(|b| b.0);
            if self.biggest.len() > BIGGEST_KEYS {
                self.biggest.remove(0);
            }
        }
    }

    fn print(&self, out: &mut impl Write) -> anyhow::Result<()> {
        writeln!(out, "RDB version {}", self.version)?;
        writeln!(
            out,
            "{:<8} {:>4} {:>12} {:>16}",
            "type", "db", "keys", "bytes"
        )?;
        let (mut keys, mut total) = (0, 0);
        for ((kind, db), (count, size)) in &self.per_type_db {
            writeln!(out, "{kind:<8} {db:>4} {count:>12} {size:>16}")?;
            keys += count;
            total += size;
        }
        writeln!(out, "{:<8} {:>4} {keys:>12} {total:>16}", "total", "")?;
        writeln!(out, "\nbiggest keys (serialized bytes in the RDB):")?;
        for (size, db, key, kind) in self.biggest.iter().rev() {
            writeln!(
                out,
                "{size:>16}  db {db:<3} {kind:<7} {}",
                String::from_utf8_lossy(key)
            )?;
        }
        Ok(())
    }
}
