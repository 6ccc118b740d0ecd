//! One call of `transform` on the raw Lua stack: the hot path of [`super::Script`].
//!
//! Why: through mlua's high-level API every table and string of a call is a registry
//! reference (a lock, a slot, a drop each), which cost some 1.3 µs per command
//! (docs/benchmarks.md). Here the arguments are pushed and the result read in one
//! `Lua::exec_raw`, one lock, no reference.
//!
//! Safety: the closure runs inside mlua's protected call; a Lua error (the script's,
//! its time limit, out of memory) longjmps out of it to that call, which turns it
//! into an `mlua::Error`. So while the closure runs a Lua API function that can
//! raise, it holds no value with a destructor of its own: what it reads is built
//! in place in `out`, which belongs to the caller's frame, above the protected call.

use std::ffi::{c_char, c_int};

use bytes::Bytes;
use mlua::{ffi, Lua};

/// What `transform` returned, as read off the stack.
#[derive(Debug, Default)]
pub(super) enum Output {
    /// `nil`: the input unchanged.
    #[default]
    Nil,
    /// The commands returned (perhaps none).
    Commands(Vec<Vec<Bytes>>),
    /// A result of the wrong shape, and what is wrong.
    Bad(String),
}

/// Calls the function held at registry index `function` as `(db, argv, keys)`, keys
/// being the Lua positions (1-based) of `key_positions`, and reads its result into
/// `out`.
pub(super) fn call<A: AsRef<[u8]>>(
    lua: &Lua,
    function: c_int,
    db: u64,
    argv: &[A],
    key_positions: &[usize],
    out: &mut Output,
) -> mlua::Result<()> {
    // SAFETY: see the module doc; every index used is one this closure pushed.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            ffi::lua_rawgeti(
                state,
                ffi::LUA_REGISTRYINDEX,
                ffi::lua_Integer::from(function),
            );
            ffi::lua_pushinteger(state, db as ffi::lua_Integer);
            ffi::lua_createtable(state, c_int::try_from(argv.len()).unwrap_or(0), 0);
            for (i, arg) in argv.iter().enumerate() {
                let arg = arg.as_ref();
                ffi::lua_pushlstring(state, arg.as_ptr() as *const c_char, arg.len());
                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
            }
            ffi::lua_createtable(state, c_int::try_from(key_positions.len()).unwrap_or(0), 0);
            for (i, at) in key_positions.iter().enumerate() {
                ffi::lua_pushinteger(state, *at as ffi::lua_Integer + 1);
                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
            }
            ffi::lua_call(state, 3, 1);
            read_result(state, out);
            ffi::lua_settop(state, 0);
        })
    }
}

/// Reads the value on top of the stack into `out` (see [`Output`]).
///
/// # Safety
/// `state` holds the result on top; called inside the protected call.
unsafe fn read_result(state: *mut ffi::lua_State, out: &mut Output) {
    match ffi::lua_type(state, -1) {
        ffi::LUA_TNIL => *out = Output::Nil,
        ffi::LUA_TTABLE => {
            *out = Output::Commands(Vec::new());
            let count = ffi::lua_rawlen(state, -1);
            for i in 1..=count {
                ffi::lua_rawgeti(state, -1, i as ffi::lua_Integer);
                read_command(state, i, out);
                ffi::lua_pop(state, 1);
                if matches!(out, Output::Bad(_)) {
                    return;
                }
            }
        }
        other => {
            *out = Output::Bad(format!(
                "transform returned a {}: return nil, or an array of commands (each an array of strings)",
                type_name(other)
            ))
        }
    }
}

/// Reads command `i` of the result (on top of the stack) into the last of `out`'s
/// commands, or makes `out` [`Output::Bad`].
///
/// # Safety
/// As [`read_result`]; `out` is [`Output::Commands`].
unsafe fn read_command(state: *mut ffi::lua_State, i: usize, out: &mut Output) {
    if ffi::lua_type(state, -1) != ffi::LUA_TTABLE {
        *out = Output::Bad(format!(
            "command {i} of the result is not an array of strings"
        ));
        return;
    }
    ffi::lua_pushlstring(state, b"db".as_ptr() as *const c_char, 2);
    let db_field = ffi::lua_rawget(state, -2);
    ffi::lua_pop(state, 1);
    if db_field != ffi::LUA_TNIL {
        *out = Output::Bad(format!("command {i} of the result: db = N (writing into another target database) is not supported yet; write into the command's own database"));
        return;
    }
    let count = ffi::lua_rawlen(state, -1);
    if count == 0 {
        *out = Output::Bad(format!("command {i} of the result: it is empty"));
        return;
    }
    let Output::Commands(commands) = out else {
        return;
    };
    commands.push(Vec::with_capacity(count));
    for j in 1..=count {
        ffi::lua_rawgeti(state, -1, j as ffi::lua_Integer);
        let kind = ffi::lua_type(state, -1);
        let arg = match kind {
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let ptr = ffi::lua_tolstring(state, -1, &mut len);
                Some(Bytes::copy_from_slice(std::slice::from_raw_parts(
                    ptr as *const u8,
                    len,
                )))
            }
            ffi::LUA_TNUMBER if ffi::lua_isinteger(state, -1) != 0 => {
                let n = ffi::lua_tointegerx(state, -1, std::ptr::null_mut());
                Some(Bytes::from(n.to_string()))
            }
            _ => None,
        };
        ffi::lua_pop(state, 1);
        match (arg, commands.last_mut()) {
            (Some(arg), Some(command)) => command.push(arg),
            _ => {
                *out = Output::Bad(format!(
                    "command {i} of the result: an argument is a {}: use strings (or integers)",
                    type_name(kind)
                ));
                return;
            }
        }
    }
}

fn type_name(kind: c_int) -> &'static str {
    match kind {
        ffi::LUA_TNIL => "nil",
        ffi::LUA_TBOOLEAN => "boolean",
        ffi::LUA_TLIGHTUSERDATA => "light userdata",
        ffi::LUA_TNUMBER => "number",
        ffi::LUA_TSTRING => "string",
        ffi::LUA_TTABLE => "table",
        ffi::LUA_TFUNCTION => "function",
        ffi::LUA_TUSERDATA => "userdata",
        ffi::LUA_TTHREAD => "thread",
        _ => "value",
    }
}
