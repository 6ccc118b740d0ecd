//! Verify's own Lua runner for `verify --script`: loads the sync's script in the same
//! sandbox the sync documents (docs/transforms.md, "Scripts") and calls its
//! `transform(db, argv, keys)` on the commands that recreate a source key.
//!
//! # Why verify does not call the sync's runner
//! verify is the independent oracle of what the sync wrote. If it called
//! `lockstep_sync::script`, a bug there (how argv is marshalled into Lua, how the
//! result is read back, which outputs are refused) would produce the same wrong
//! commands on both sides of the comparison and hide itself. So this runner is
//! written against the documented contract only, with mlua's safe API (the sync uses
//! a raw-stack fast path; verify favours plain code over speed), and shares nothing
//! with the sync but the crate and its features (`lua54`, `vendored`, `send`).
//!
//! # The contract it implements
//! - Libraries: `string`, `table`, `math`, `utf8` only; `load`, `loadfile`, `dofile`,
//!   `require`, `collectgarbage`, `print`, `rawset`, `string.dump`, `math.random`,
//!   `math.randomseed` removed; the file is loaded as text, never bytecode.
//! - Globals are read-only once the file has run (an assignment is an error naming
//!   the global and the script's line).
//! - A time limit per call (an instruction hook looks at the clock every 1000
//!   instructions) and a memory limit for the state.
//! - `transform` returns `nil` (the input unchanged) or an array of commands, each an
//!   array of strings or integers; a `db` field is refused, as are MULTI, EXEC,
//!   SELECT, FLUSHALL, FLUSHDB, SWAPDB, EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, FCALL and
//!   FCALL_RO, and a command whose first key is a `LOCKSTEP_` one (the sync stops the
//!   task on them, so verify stops too).
//!
//! An error (Lua's, a limit, a refused output) is a [`CallError`] naming the command,
//! the key and the script's `file:line:`; verify stops on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};

use crate::rules::glob::Glob;

/// Lua instructions between two looks at the clock (the documented contract).
const HOOK_INSTRUCTIONS: u32 = 1000;

/// Commands a script may not return (the documented refusals).
const REFUSED: [&str; 12] = [
    "MULTI",
    "EXEC",
    "SELECT",
    "FLUSHALL",
    "FLUSHDB",
    "SWAPDB",
    "EVAL",
    "EVALSHA",
    "EVAL_RO",
    "EVALSHA_RO",
    "FCALL",
    "FCALL_RO",
];

/// What `transform` made of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `nil`: the input as it is.
    Unchanged,
    /// These commands instead, in order (none: the input dropped).
    Commands(Vec<Vec<Vec<u8>>>),
}

/// A failed call: verify stops, naming the command, its key and the reason (with
/// the script's `file:line:` when Lua gave one). Never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the script {file} failed on {command} of key {key:?} (source db {db}): {reason}")]
pub struct CallError {
    pub file: String,
    pub command: String,
    pub key: String,
    pub db: u32,
    pub reason: String,
}

/// The deadline of the call under way, read by the instruction hook.
struct Clock {
    epoch: Instant,
    deadline_ns: AtomicU64,
    timed_out: AtomicBool,
}

impl Clock {
    fn arm(&self, timeout: Duration) {
        let at = self.epoch.elapsed() + timeout;
        self.deadline_ns
            .store(at.as_nanos() as u64, Ordering::Relaxed);
        self.timed_out.store(false, Ordering::Relaxed);
    }

    fn is_past(&self) -> bool {
        self.epoch.elapsed().as_nanos() as u64 > self.deadline_ns.load(Ordering::Relaxed)
    }
}

/// A loaded script.
pub struct Runner {
    lua: Lua,
    transform: Function,
    globs: Vec<Glob>,
    file: String,
    timeout: Duration,
    memory: usize,
    clock: Arc<Clock>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("file", &self.file).finish()
    }
}

impl Runner {
    /// Runs the file `code` (named `file` in messages) in a fresh sandbox and takes
    /// its `transform` and `keys`. The error says what is wrong, with Lua's
    /// `file:line:` for a syntax error or a failing top level.
    pub fn load(
        file: &str,
        code: &[u8],
        timeout: Duration,
        memory: usize,
    ) -> Result<Runner, String> {
        let fail = |what: String| format!("--script {file}: {what}");
        let setup = |e: mlua::Error| fail(format!("cannot set up Lua: {e}"));
        let lua = sandbox(memory).map_err(setup)?;
        let clock = Arc::new(Clock {
            epoch: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
        });
        let hook_clock = clock.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS),
            move |_, _| {
                if hook_clock.is_past() {
                    hook_clock.timed_out.store(true, Ordering::Relaxed);
                    return Err(mlua::Error::runtime("the script's time limit was reached"));
                }
                Ok(VmState::Continue)
            },
        )
        .map_err(setup)?;
        let env = environment(&lua).map_err(setup)?;
        clock.arm(timeout);
        lua.load(code)
            .set_name(format!("@{file}"))
            .set_mode(ChunkMode::Text)
            .set_environment(env.clone())
            .exec()
            .map_err(|e| fail(explain(&e, &clock, timeout, memory)))?;
        let transform = match env.raw_get::<Value>("transform").map_err(setup)? {
            Value::Function(f) => f,
            _ => {
                return Err(fail(
                    "it defines no function transform(db, argv, keys)".into(),
                ))
            }
        };
        let globs = key_globs(&env).map_err(fail)?;
        freeze(&lua, &env).map_err(setup)?;
        Ok(Runner {
            lua,
            transform,
            globs,
            file: file.to_owned(),
            timeout,
            memory,
            clock,
        })
    }

    /// Whether the script takes source key `key` (its `keys` globs; every key
    /// without them).
    pub fn touches(&self, key: &[u8]) -> bool {
        self.globs.is_empty() || self.globs.iter().any(|g| g.matches(key))
    }

    /// The `keys` globs as given (empty: every key).
    pub fn globs(&self) -> &[Glob] {
        &self.globs
    }

    /// `transform(db, argv, {2})` on a command that recreates a key (argv[2] in Lua
    /// is the key), and the checks of what it returned.
    pub fn call(&self, db: u32, argv: &[Vec<u8>]) -> Result<Output, CallError> {
        let fail = |reason: String| self.error(db, argv, reason);
        let lua_fail = |e: mlua::Error| fail(explain(&e, &self.clock, self.timeout, self.memory));
        let args = self.lua.create_table().map_err(lua_fail)?;
        for (i, arg) in argv.iter().enumerate() {
            let arg = self.lua.create_string(arg).map_err(lua_fail)?;
            args.raw_set(i + 1, arg).map_err(lua_fail)?;
        }
        let keys = self.lua.create_sequence_from([2]).map_err(lua_fail)?;
        self.clock.arm(self.timeout);
        let result: Value = self
            .transform
            .call((i64::from(db), args, keys))
            .map_err(lua_fail)?;
        let output = read_output(result).map_err(&fail)?;
        if let Output::Commands(commands) = &output {
            for command in commands {
                refuse(command).map_err(&fail)?;
            }
        }
        Ok(output)
    }

    fn error(&self, db: u32, argv: &[Vec<u8>], reason: String) -> CallError {
        let text = |i: usize| {
            argv.get(i)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default()
        };
        CallError {
            file: self.file.clone(),
            command: text(0).to_uppercase(),
            key: text(1),
            db,
            reason,
        }
    }
}

/// A state with the four closed libraries and the documented removals.
fn sandbox(memory: usize) -> mlua::Result<Lua> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8;
    let lua = Lua::new_with(libs, LuaOptions::new())?;
    lua.set_memory_limit(memory)?;
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
    let math: Table = globals.raw_get("math")?;
    math.raw_set("random", Value::Nil)?;
    math.raw_set("randomseed", Value::Nil)?;
    let string: Table = globals.raw_get("string")?;
    string.raw_set("dump", Value::Nil)?;
    Ok(lua)
}

/// The script's own global table, reading the libraries through `__index`.
fn environment(lua: &Lua) -> mlua::Result<Table> {
    let env = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", lua.globals())?;
    env.set_metatable(Some(meta))?;
    env.raw_set("_G", env.clone())?;
    Ok(env)
}

/// Moves what the file defined behind `__index` and refuses assignments from then on.
fn freeze(lua: &Lua, env: &Table) -> mlua::Result<()> {
    let defined = lua.create_table()?;
    let mut names = Vec::new();
    for pair in env.pairs::<Value, Value>() {
        let (name, value) = pair?;
        defined.raw_set(name.clone(), value)?;
        names.push(name);
    }
    for name in names {
        env.raw_set(name, Value::Nil)?;
    }
    let libs = lua.create_table()?;
    libs.raw_set("__index", lua.globals())?;
    defined.set_metatable(Some(libs))?;
    let refuse: Function = lua
        .load("return function(_, name) error(\"assignment to global '\" .. tostring(name) .. \"': use a local\", 2) end")
        .set_name("=verify")
        .eval()?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", defined)?;
    meta.raw_set("__newindex", refuse)?;
    meta.raw_set("__metatable", false)?;
    env.set_metatable(Some(meta))?;
    Ok(())
}

/// The optional `keys` global: an array of Redis globs.
fn key_globs(env: &Table) -> Result<Vec<Glob>, String> {
    let bad = || "keys must be an array of glob strings, e.g. keys = {\"user:*\"}".to_owned();
    let table = match env.raw_get::<Value>("keys").map_err(|e| e.to_string())? {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(t) => t,
        _ => return Err(bad()),
    };
    let mut globs = Vec::new();
    for value in table.sequence_values::<Value>() {
        let Value::String(text) = value.map_err(|e| e.to_string())? else {
            return Err(bad());
        };
        let text = text
            .to_str()
            .map_err(|_| "a keys glob is not UTF-8".to_owned())?;
        globs.push(Glob::new(&text).map_err(|e| format!("keys glob {:?}: {e}", &*text))?);
    }
    if globs.is_empty() {
        return Err("keys is empty (remove it to take every key)".into());
    }
    Ok(globs)
}

/// The result of `transform` as commands.
fn read_output(result: Value) -> Result<Output, String> {
    let table = match result {
        Value::Nil => return Ok(Output::Unchanged),
        Value::Table(t) => t,
        other => {
            return Err(format!(
                "transform returned a {}: return nil or an array of commands",
                other.type_name()
            ))
        }
    };
    let mut commands = Vec::new();
    for (i, command) in table.sequence_values::<Value>().enumerate() {
        let n = i + 1;
        let Ok(Value::Table(command)) = command else {
            return Err(format!(
                "command {n} of the result is not an array of strings"
            ));
        };
        if !matches!(command.raw_get::<Value>("db"), Ok(Value::Nil)) {
            return Err(format!(
                "command {n} of the result: db = N is not supported"
            ));
        }
        let mut argv = Vec::new();
        for arg in command.sequence_values::<Value>() {
            match arg.map_err(|e| e.to_string())? {
                Value::String(s) => argv.push(s.as_bytes().to_vec()),
                Value::Integer(i) => argv.push(i.to_string().into_bytes()),
                other => {
                    return Err(format!(
                        "command {n} of the result: an argument is a {}: use strings (or integers)",
                        other.type_name()
                    ))
                }
            }
        }
        if argv.is_empty() {
            return Err(format!("command {n} of the result is empty"));
        }
        commands.push(argv);
    }
    Ok(Output::Commands(commands))
}

/// Refuses the documented commands a script may not return, and a write of
/// lockstep's own keys (its first key; the commands verify models name it first).
fn refuse(argv: &[Vec<u8>]) -> Result<(), String> {
    let name = String::from_utf8_lossy(&argv[0]).to_uppercase();
    if REFUSED.contains(&name.as_str()) {
        return Err(format!("it returned {name}, which a script may not"));
    }
    if argv.get(1).is_some_and(|key| key.starts_with(b"LOCKSTEP_")) {
        return Err(format!(
            "it returned {name} of a LOCKSTEP_ key, which is lockstep's own"
        ));
    }
    Ok(())
}

/// Lua's error in one line: the time or memory limit, or the message with its
/// `file:line:`.
fn explain(err: &mlua::Error, clock: &Clock, timeout: Duration, memory: usize) -> String {
    if clock.timed_out.load(Ordering::Relaxed) {
        return format!(
            "it ran longer than {} ms (--script-timeout)",
            timeout.as_millis()
        );
    }
    innermost(err, memory)
}

fn innermost(err: &mlua::Error, memory: usize) -> String {
    match err {
        mlua::Error::MemoryError(_) => {
            format!("it used more than {} MiB (--script-memory)", memory >> 20)
        }
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            innermost(cause, memory)
        }
        mlua::Error::RuntimeError(m) => first_line(m),
        mlua::Error::SyntaxError { message, .. } => {
            format!("syntax error: {}", first_line(message))
        }
        other => first_line(&other.to_string()),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(code: &str) -> Result<Runner, String> {
        Runner::load(
            "t.lua",
            code.as_bytes(),
            Duration::from_millis(100),
            16 << 20,
        )
    }

    fn argv(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_rename_runs_and_nil_keeps_the_input() {
        let r = load(
            "keys = {\"user:*\"}\nfunction transform(db, argv, at)\n  for _, i in ipairs(at) do argv[i] = argv[i]:gsub('^user:', 'u:') end\n  return {argv}\nend",
        )
        .expect("loads");
        assert!(r.touches(b"user:1") && !r.touches(b"order:1"));
        assert_eq!(
            r.call(0, &argv(&["SET", "user:1", "v\0"])),
            Ok(Output::Commands(vec![argv(&["SET", "u:1", "v\0"])]))
        );
        let keep = load("function transform() return nil end").expect("loads");
        assert!(keep.touches(b"anything"));
        assert_eq!(
            keep.call(0, &argv(&["SET", "k", "v"])),
            Ok(Output::Unchanged)
        );
    }

    #[test]
    fn the_sandbox_and_the_limits_hold() {
        for code in [
            "function transform() return {{io.open('x')}} end",
            "function transform() os.exit() end",
            "function transform() return {{tostring(math.random())}} end",
            "function transform() load('x=1')() end",
            "function transform() x = 1 end",
        ] {
            let r = load(code).expect("loads");
            let err = r.call(0, &argv(&["SET", "k", "v"])).unwrap_err();
            assert!(err.reason.contains("t.lua:1:"), "{code}: {err}");
        }
        let slow = load("function transform() while true do end end").expect("loads");
        let err = slow.call(0, &argv(&["SET", "k", "v"])).unwrap_err();
        assert!(err.reason.contains("--script-timeout"), "{err}");
        let big = load("function transform() local t = {} for i = 1, 1e9 do t[i] = i end end")
            .expect("loads");
        let err = big.call(0, &argv(&["SET", "k", "v"])).unwrap_err();
        assert!(err.reason.contains("--script-memory"), "{err}");
        let syntax = load("function transform(\n  return end").unwrap_err();
        assert!(syntax.contains("t.lua:2:"), "{syntax}");
        assert!(load("x = 1").unwrap_err().contains("no function transform"));
        assert!(load("keys = {} function transform() end").is_err());
        assert!(load("keys = 'a' function transform() end").is_err());
    }

    #[test]
    fn refused_and_malformed_outputs_are_errors() {
        for (code, what) in [
            ("function transform() return {{'FLUSHALL'}} end", "FLUSHALL"),
            ("function transform() return {{'MULTI'}} end", "MULTI"),
            ("function transform() return 5 end", "integer"),
            ("function transform() return {{}} end", "empty"),
            ("function transform() return {{'SET', {}}} end", "table"),
            ("function transform(d, a) a.db = 1 return {a} end", "db = N"),
            (
                "function transform() return {{'SET', 'LOCKSTEP_X', 'v'}} end",
                "LOCKSTEP_",
            ),
        ] {
            let err = load(code)
                .expect("loads")
                .call(3, &argv(&["SET", "k", "v"]))
                .unwrap_err();
            assert!(err.reason.contains(what), "{code}: {err}");
            assert!(
                err.to_string().contains("SET of key \"k\" (source db 3)"),
                "{err}"
            );
        }
    }
}
