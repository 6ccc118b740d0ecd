//! The script level of the transforms (`lockstep sync --script FILE.lua`, issue 17):
//! a sandboxed Lua function that rewrites what the task writes to the target, for
//! what the declarative rules of [`crate::filter`] and [`crate::rename`] cannot say.
//!
//! # How it fits
//! The script runs after the filter and before the target: in the stream, on what
//! the filter kept (`engine::classify`: the command, or each command of its
//! rewrite), before the command joins the target transaction that records its
//! offset, so a restart never applies a transform twice or skips one; in the full
//! copy ([`crate::load`]), on the commands that recreate each key it touches (DEL,
//! SET, RPUSH / SADD / ZADD / HSET batches, PEXPIREAT), in pieces for big keys; a
//! stream or module key as its one `RESTORE` (renamed or dropped, its payload opaque).
//! Keys it does not touch (its `keys` globs) are written as without a script:
//! RESTORE in the copy, as sent in the stream.
//!
//! # The API (docs/transforms.md, "Scripts")
//! The file defines `function transform(db, argv, keys)`: `db` is the source
//! database, `argv` a Lua array of (binary-safe) strings, `keys` the positions in
//! `argv` of the command's keys (from [`crate::keys`]). It returns `nil` (apply the input
//! unchanged) or an array of commands, each an array of strings or integers; an
//! empty array drops the input. Optionally the file sets a global `keys = {"glob",
//! ...}` (Redis glob syntax): only commands with a key matching one of them, and only
//! full-copy keys matching one, go through the script. Every command returned must be
//! one whose keys lockstep knows ([`crate::keys`]), naming at least one key, none of
//! them `LOCKSTEP_`, none of the commands that would break the engine's framing, and
//! no MOVE / COPY ... DB into a database the input did not name ([`check_output`]
//! says which and why). `db = N` on a returned command (another target database) is
//! refused for now.
//!
//! # Why Lua, and `mlua`
//! Redis users already write Lua (EVAL, and RedisShake's transforms). `mlua` is the
//! maintained binding; with `vendored` it builds its own Lua 5.4 (no system library
//! to install, the same interpreter on every machine), and `send` lets one state serve
//! the task's async tasks (calls are serialized by mlua's lock). Loading, the sandbox
//! and errors use mlua's safe API; the per-command call is made on the raw Lua stack
//! ([`raw`]: one lock, no registry reference per table and string, half the cost).
//!
//! # The sandbox, and determinism
//! Only the `string`, `table`, `math` and `utf8` libraries are loaded: no `io`, `os`,
//! `package`/`require`, `debug`, `coroutine`; `load`, `loadfile`, `dofile`,
//! `string.dump`, `collectgarbage`, `print`, `rawset`, `math.random` and `math.randomseed` are
//! removed, and the file is loaded as text only (never bytecode). The output must
//! depend on the input alone, so that a replay after a restart writes the same: no
//! clock, no randomness, and the globals are read-only once the file has run (an
//! assignment to a global inside `transform` is an error naming it). Each call has a
//! time limit (an instruction-count hook that checks the wall clock, default 100 ms)
//! and the state a memory limit (default 64 MiB). An error, a timeout or a memory
//! overflow stops the task ([`ScriptError`], naming the command and its key, never
//! values, and Lua's `file:line:`); nothing of that command is applied.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};

use crate::filter::{Filter, OWN_KEY_PREFIX};
use crate::keys::key_indices;

/// Lua instructions between two looks at the clock.
const HOOK_INSTRUCTIONS: u32 = 1000;

/// The limits of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Wall-clock time one call of `transform` may take.
    pub timeout: Duration,
    /// Bytes the Lua state may hold, the script's data included.
    pub memory: usize,
}

impl Default for ScriptLimits {
    fn default() -> ScriptLimits {
        ScriptLimits {
            timeout: Duration::from_millis(100),
            memory: 64 << 20,
        }
    }
}

/// What the script made of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transformed {
    /// `nil`: apply the input as it is.
    Unchanged,
    /// Apply these instead, in order (none: drop the input).
    Commands(Vec<Vec<Bytes>>),
}

/// A script refused at start (unreadable, a syntax error, no `transform`, bad `keys`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--script {file}: {reason}")]
pub struct ScriptLoadError {
    pub file: String,
    pub reason: String,
}

/// A call of `transform` that failed: the task stops. Names the command and its key,
/// never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the script {file} failed on {command} of key {key:?} (source db {db}): {reason}")]
pub struct ScriptError {
    pub file: String,
    pub command: String,
    pub key: String,
    pub db: u64,
    pub reason: String,
}

/// A loaded script, ready to transform commands.
pub struct Script {
    lua: Lua,
    /// `transform`, held in the registry for the raw calls ([`raw::call`]).
    transform: mlua::RegistryKey,
    /// The `keys` globs; empty: every key goes through the script.
    keys: Vec<Vec<u8>>,
    file: String,
    limits: ScriptLimits,
    clock: Arc<CallClock>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("file", &self.file)
            .field("keys", &self.keys.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The deadline of the call under way, shared with the instruction hook.
struct CallClock {
    epoch: Instant,
    /// Nanoseconds after `epoch` when the call under way must have returned.
    deadline_ns: AtomicU64,
    timed_out: AtomicBool,
}

impl CallClock {
    fn start(&self, timeout: Duration) {
        let deadline = self.epoch.elapsed() + timeout;
        self.deadline_ns
            .store(deadline.as_nanos() as u64, Ordering::Relaxed);
        self.timed_out.store(false, Ordering::Relaxed);
    }

    fn is_past(&self) -> bool {
        self.epoch.elapsed().as_nanos() as u64 > self.deadline_ns.load(Ordering::Relaxed)
    }
}

impl Script {
    /// Reads and loads the script at `path` (see [`Script::load`]).
    pub fn from_file(path: &Path, limits: ScriptLimits) -> Result<Script, ScriptLoadError> {
        let file = path.display().to_string();
        let code = std::fs::read(path).map_err(|e| ScriptLoadError {
            file: file.clone(),
            reason: format!("cannot read it: {e}"),
        })?;
        Script::load(&file, &code, limits)
    }

    /// Runs the script's file in a fresh sandbox and takes its `transform` and `keys`;
    /// refuses a syntax error, a failing file, a missing `transform` or bad `keys`.
    pub fn load(file: &str, code: &[u8], limits: ScriptLimits) -> Result<Script, ScriptLoadError> {
        let refuse = |reason: String| ScriptLoadError {
            file: file.to_owned(),
            reason,
        };
        let lua = sandbox(limits).map_err(|e| refuse(format!("cannot set up Lua: {e}")))?;
        let clock = Arc::new(CallClock {
            epoch: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
        });
        install_hook(&lua, clock.clone()).map_err(|e| refuse(format!("cannot set up Lua: {e}")))?;
        let setup = |e: mlua::Error| refuse(format!("cannot set up Lua: {e}"));
        let globals = script_env(&lua).map_err(setup)?;
        clock.start(limits.timeout);
        lua.load(code)
            .set_name(format!("@{file}"))
            .set_mode(ChunkMode::Text)
            .set_environment(globals.clone())
            .exec()
            .map_err(|e| refuse(describe(&e, &clock, limits)))?;
        let transform =
            match globals.get::<Value>("transform") {
                Ok(Value::Function(f)) => f,
                _ => return Err(refuse(
                    "it defines no function transform(db, argv) (docs/transforms.md, \"Scripts\")"
                        .into(),
                )),
            };
        let keys = read_keys(&globals).map_err(refuse)?;
        let transform = lua.create_registry_value(transform).map_err(setup)?;
        freeze_globals(&lua, &globals).map_err(setup)?;
        Ok(Script {
            lua,
            transform,
            keys,
            file: file.to_owned(),
            limits,
            clock,
        })
    }

    /// The `keys` globs (empty: every key).
    pub fn key_globs(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// Does the script take this key (full copy: a key of the snapshot)?
    pub fn touches_key(&self, key: &[u8]) -> bool {
        self.keys.is_empty() || self.keys.iter().any(|g| glob_match(g, key))
    }

    /// A command of the stream through the script: unchanged when none of its keys is
    /// one the script takes (or it has none); an error when lockstep does not know its
    /// keys (it cannot tell whether the script takes it).
    pub fn stream_command(&self, db: u64, argv: &[Bytes]) -> Result<Transformed, ScriptError> {
        let indices: Vec<usize> = match key_indices(argv) {
            Ok(indices) => indices.collect(),
            Err(e) => {
                let key = argv.get(1).map(|k| &k[..]).unwrap_or_default();
                return Err(self.error(argv, key, db, format!("{e}; the script cannot be applied to it (fix: --drop-command it if it writes no key)")));
            }
        };
        match indices
            .iter()
            .map(|&i| &argv[i][..])
            .find(|k| self.touches_key(k))
        {
            Some(key) => self.call(db, argv, &indices, key),
            None => Ok(Transformed::Unchanged),
        }
    }

    /// A command of the full copy that recreates a key the script touches (argv[1] is
    /// the key) through the script.
    pub fn copy_command<A: AsRef<[u8]>>(
        &self,
        db: u64,
        argv: &[A],
    ) -> Result<Transformed, ScriptError> {
        let key = argv.get(1).map(|k| k.as_ref()).unwrap_or_default();
        self.call(db, argv, &[1], key)
    }

    /// Runs `transform(db, argv, keys)` (`keys`: the Lua positions in argv of the
    /// command's keys) and checks what it returns; `key` names the command in errors.
    fn call<A: AsRef<[u8]>>(
        &self,
        db: u64,
        argv: &[A],
        key_positions: &[usize],
        key: &[u8],
    ) -> Result<Transformed, ScriptError> {
        let fail = |reason: String| self.error(argv, key, db, reason);
        let lua_error = |e: mlua::Error| fail(describe(&e, &self.clock, self.limits));
        let mut output = raw::Output::Nil;
        self.clock.start(self.limits.timeout);
        raw::call(
            &self.lua,
            self.transform.id(),
            db,
            argv,
            key_positions,
            &mut output,
        )
        .map_err(lua_error)?;
        let transformed = match output {
            raw::Output::Nil => Transformed::Unchanged,
            raw::Output::Commands(commands) => Transformed::Commands(commands),
            raw::Output::Bad(reason) => return Err(fail(reason)),
        };
        if let Transformed::Commands(commands) = &transformed {
            for command in commands {
                check_output(command, argv).map_err(&fail)?;
            }
        }
        Ok(transformed)
    }

    /// The error that stops the task on `argv` (named by its command and `key`).
    fn error<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
        key: &[u8],
        db: u64,
        reason: String,
    ) -> ScriptError {
        ScriptError {
            file: self.file.clone(),
            command: argv
                .first()
                .map(|n| String::from_utf8_lossy(n.as_ref()).to_uppercase())
                .unwrap_or_default(),
            key: String::from_utf8_lossy(key).into_owned(),
            db,
            reason,
        }
    }
}

/// A Lua state with only the deterministic, closed libraries (see the module doc).
fn sandbox(limits: ScriptLimits) -> mlua::Result<Lua> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8;
    let lua = Lua::new_with(libs, LuaOptions::new())?;
    lua.set_memory_limit(limits.memory)?;
    let globals = lua.globals();
    for name in [
        "load",
        "loadfile",
        "dofile",
        "require",
        "collectgarbage",
        "print",
        "rawset",
    ] {
        globals.raw_set(name, Value::Nil)?;
    }
    let math: Table = globals.get("math")?;
    math.raw_set("random", Value::Nil)?;
    math.raw_set("randomseed", Value::Nil)?;
    let string: Table = globals.get("string")?;
    string.raw_set("dump", Value::Nil)?;
    Ok(lua)
}

/// Every [`HOOK_INSTRUCTIONS`] instructions, stops the call once past its deadline.
fn install_hook(lua: &Lua, clock: Arc<CallClock>) -> mlua::Result<()> {
    let triggers = HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS);
    lua.set_hook(triggers, move |_, _| {
        if clock.is_past() {
            clock.timed_out.store(true, Ordering::Relaxed);
            return Err(mlua::Error::runtime("the script's time limit was reached"));
        }
        Ok(VmState::Continue)
    })
}

/// The script's global table: empty, reading the libraries through `__index` (so
/// that [`freeze_globals`] can later freeze what the file defined).
fn script_env(lua: &Lua) -> mlua::Result<Table> {
    let env = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", lua.globals())?;
    env.set_metatable(Some(meta))?;
    env.raw_set("_G", env.clone())?;
    Ok(env)
}

/// Makes the script's globals read-only: what the file defined moves behind
/// `__index`, and `__newindex` refuses (state kept between calls would be lost on a
/// restart, and a replay would differ). `__metatable` locks the metatable itself.
fn freeze_globals(lua: &Lua, env: &Table) -> mlua::Result<()> {
    let store = lua.create_table()?;
    let mut names = Vec::new();
    for pair in env.pairs::<Value, Value>() {
        let (name, value) = pair?;
        store.raw_set(name.clone(), value)?;
        names.push(name);
    }
    for name in names {
        env.raw_set(name, Value::Nil)?;
    }
    let store_meta = lua.create_table()?;
    store_meta.raw_set("__index", lua.globals())?;
    store.set_metatable(Some(store_meta))?;
    // In Lua, so that the error names the script's line (level 2: the assignment).
    let refuse: Function = lua
        .load(
            "return function(_, name) error(\"assignment to global '\" .. tostring(name) .. \"': use a local (a script keeps no state between calls)\", 2) end",
        )
        .set_name("=lockstep")
        .eval()?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", store)?;
    meta.raw_set("__newindex", refuse)?;
    meta.raw_set("__metatable", false)?;
    env.set_metatable(Some(meta))?;
    Ok(())
}

/// The `keys` global: absent, or an array of glob strings.
fn read_keys(globals: &Table) -> Result<Vec<Vec<u8>>, String> {
    let bad = || "keys must be an array of glob strings, e.g. keys = {\"user:*\"}".to_owned();
    match globals.get::<Value>("keys").map_err(|e| e.to_string())? {
        Value::Nil => Ok(Vec::new()),
        Value::Table(t) => {
            let mut keys = Vec::new();
            for glob in t.sequence_values::<Value>() {
                match glob.map_err(|e| e.to_string())? {
                    Value::String(s) => keys.push(s.as_bytes().to_vec()),
                    _ => return Err(bad()),
                }
            }
            if keys.is_empty() {
                return Err("keys is empty: no key would go through the script (remove keys to take every key)".into());
            }
            Ok(keys)
        }
        _ => Err(bad()),
    }
}

/// Commands a script may not return, and why.
const REFUSED: &[(&str, &str)] = &[
    ("MULTI", "lockstep wraps the stream in its own transactions, with the checkpoint"),
    ("EXEC", "lockstep wraps the stream in its own transactions, with the checkpoint"),
    ("SELECT", "the engine tracks the target's database; a SELECT would send later commands, and the checkpoint, elsewhere"),
    ("FLUSHALL", "it removes more than the command's keys, lockstep's checkpoint included"),
    ("FLUSHDB", "it removes more than the command's keys"),
    ("SWAPDB", "it moves whole databases the task may not own"),
    ("EVAL", "a script may name keys in its body, which lockstep cannot check"),
    ("EVALSHA", "a script may name keys in its body, which lockstep cannot check"),
    ("EVAL_RO", "a script may name keys in its body, which lockstep cannot check"),
    ("EVALSHA_RO", "a script may name keys in its body, which lockstep cannot check"),
    ("FCALL", "a function may name keys in its body, which lockstep cannot check"),
    ("FCALL_RO", "a function may name keys in its body, which lockstep cannot check"),
];

/// Checks a command the script returned for the command `input`: it is none of
/// [`REFUSED`], its keys are known and there is one at least, none is lockstep's own,
/// and a MOVE or COPY ... DB goes to the database the input named (the filter has
/// already mapped it; another could be a database the task does not own).
pub fn check_output<A: AsRef<[u8]>>(argv: &[Bytes], input: &[A]) -> Result<(), String> {
    let name = argv.first().map(|n| &n[..]).unwrap_or_default();
    let shown = String::from_utf8_lossy(name).to_uppercase();
    if let Some((_, why)) = REFUSED
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
    {
        return Err(format!(
            "it returned {shown}, which a script may not: {why}"
        ));
    }
    if let Some(db) = db_argument(argv) {
        if db_argument(input) != Some(db) {
            return Err(format!("it returned {shown} into database {}, which the input did not name: a script writes into the command's own database", String::from_utf8_lossy(db)));
        }
    }
    let indices = key_indices(argv)
        .map_err(|e| format!("it returned a command lockstep cannot check: {e}"))?;
    let mut keys = 0;
    for i in indices {
        keys += 1;
        if argv[i].starts_with(OWN_KEY_PREFIX) {
            return Err(format!(
                "it returned {shown} of a LOCKSTEP_ key, which is lockstep's own"
            ));
        }
    }
    if keys == 0 {
        return Err(format!(
            "it returned {shown}, which names no key: a script may only write keys"
        ));
    }
    Ok(())
}

/// The database a MOVE (`MOVE key db`) or a `COPY ... DB db` writes into.
fn db_argument<A: AsRef<[u8]>>(argv: &[A]) -> Option<&[u8]> {
    let name = argv.first()?.as_ref();
    if name.eq_ignore_ascii_case(b"MOVE") {
        return argv.get(2).map(|d| d.as_ref());
    }
    if name.eq_ignore_ascii_case(b"COPY") {
        let at = argv
            .iter()
            .position(|a| a.as_ref().eq_ignore_ascii_case(b"DB"))?;
        return argv.get(at + 1).map(|d| d.as_ref());
    }
    None
}

/// Refuses a script with filter rules that need the target's keys attributed to the
/// task by name: with a script, target names cannot be traced back to source keys,
/// so the task owns its target databases whole (see docs/transforms.md).
pub fn check_filter(filter: &Filter) -> Result<(), String> {
    let rule = if !filter.include_prefixes.is_empty() || !filter.exclude_prefixes.is_empty() {
        "--prefix / --exclude-prefix"
    } else if !filter.patterns.is_empty() {
        "--match / --exclude-match / --key-regex / --exclude-key-regex"
    } else if filter.types.is_active() {
        "--types / --exclude-types"
    } else if !filter.renames.is_empty() {
        "--rename-prefix / --rename-regex"
    } else if !filter.routes.is_empty() {
        "--route-db"
    } else if !filter.source_slots.is_empty() {
        "a cluster source (each shard's task clears only its own slots' keys)"
    } else {
        return Ok(());
    };
    Err(format!(
        "--script cannot be combined with {rule}: a full resync must clear the task's keys on the target, and a script's target keys cannot be told from another task's by name, so a task with a script owns its target databases whole (fix: filter and rename keys in the script, select databases with --dbs / --map-db)"
    ))
}

/// Lua's message for a failed call: the time or memory limit, or the message with its
/// `file:line:` (the traceback's first frame when there is one).
fn describe(err: &mlua::Error, clock: &CallClock, limits: ScriptLimits) -> String {
    if clock.timed_out.load(Ordering::Relaxed) {
        return format!(
            "it ran longer than {} ms (--script-timeout){}",
            limits.timeout.as_millis(),
            innermost_line(err)
                .map(|l| format!(", at {l}"))
                .unwrap_or_default()
        );
    }
    if is_memory_error(err) {
        return format!(
            "it used more than {} MiB (--script-memory)",
            limits.memory >> 20
        );
    }
    innermost(err)
}

fn is_memory_error(err: &mlua::Error) -> bool {
    match err {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// The message of the error that started it all, without tracebacks.
fn innermost(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => innermost(cause),
        mlua::Error::WithContext { cause, .. } => innermost(cause),
        mlua::Error::RuntimeError(m) => first_line(m),
        mlua::Error::SyntaxError { message, .. } => {
            format!("syntax error: {}", first_line(message))
        }
        other => first_line(&other.to_string()),
    }
}

/// The `file:line` of a traceback's first Lua frame, when the error has one.
fn innermost_line(err: &mlua::Error) -> Option<String> {
    let text = match err {
        mlua::Error::CallbackError { traceback, .. } => traceback.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        _ => return None,
    };
    text.lines()
        .map(str::trim)
        .find(|l| {
            l.contains(".lua:") || l.contains(':') && !l.starts_with('[') && !l.starts_with("stack")
        })
        .and_then(|l| l.split(": in ").next())
        .map(str::to_owned)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Redis's glob (`stringmatchlen`, case-sensitive): `*`, `?`, `[abc]`, `[^a]`,
/// `[a-z]`, and `\` to quote the next character.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (pattern, text);
    while let Some(&c) = p.first() {
        match c {
            b'*' => {
                while p.first() == Some(&b'*') {
                    p = &p[1..];
                }
                if p.is_empty() {
                    return true;
                }
                return (0..=t.len()).any(|i| glob_match(p, &t[i..]));
            }
            b'?' => {
                if t.is_empty() {
                    return false;
                }
                t = &t[1..];
                p = &p[1..];
            }
            b'[' => {
                let Some((&ch, rest)) = t.split_first() else {
                    return false;
                };
                let (matched, after) = class_match(&p[1..], ch);
                if !matched {
                    return false;
                }
                p = after;
                t = rest;
            }
            _ => {
                let literal = if c == b'\\' && p.len() >= 2 { p[1] } else { c };
                let width = if c == b'\\' && p.len() >= 2 { 2 } else { 1 };
                if t.first() != Some(&literal) {
                    return false;
                }
                p = &p[width..];
                t = &t[1..];
            }
        }
    }
    t.is_empty()
}

/// A `[...]` class (after its `[`) against `ch`: whether it matches, and the pattern
/// after the class's `]`.
fn class_match(mut p: &[u8], ch: u8) -> (bool, &[u8]) {
    let not = p.first() == Some(&b'^');
    if not {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [] => break,
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', c, rest @ ..] => {
                matched |= *c == ch;
                p = rest;
            }
            [a, b'-', b, rest @ ..] if *b != b']' => {
                let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                matched |= lo <= ch && ch <= hi;
                p = rest;
            }
            [c, rest @ ..] => {
                matched |= *c == ch;
                p = rest;
            }
        }
    }
    (matched != not, p)
}

mod raw;
#[cfg(test)]
mod tests;
