//! Unit tests of the script level: the sandbox, determinism, the limits, the output
//! checks and Redis's glob.

use super::*;

fn load(code: &str) -> Result<Script, ScriptLoadError> {
    Script::load("t.lua", code.as_bytes(), ScriptLimits::default())
}

fn script(code: &str) -> Script {
    load(code).expect("the script loads")
}

fn bytes(words: &[&str]) -> Vec<Bytes> {
    words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn run(script: &Script, argv: &[&str]) -> Result<Transformed, ScriptError> {
    script.stream_command(0, &bytes(argv))
}

fn commands(words: &[&[&str]]) -> Transformed {
    Transformed::Commands(
        words
            .iter()
            .map(|c| {
                c.iter()
                    .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                    .collect()
            })
            .collect(),
    )
}

const RENAME: &str = r#"
function transform(db, argv, keys)
  for _, i in ipairs(keys) do argv[i] = "u:" .. argv[i] end
  return {argv}
end
"#;

#[test]
fn a_rename_script_rewrites_the_key_and_nil_keeps_the_command() {
    let s = script(RENAME);
    assert_eq!(
        run(&s, &["SET", "k", "v"]).expect("runs"),
        commands(&[&["SET", "u:k", "v"]])
    );
    // Every key, by the key positions lockstep passes; values untouched.
    assert_eq!(
        run(&s, &["MSET", "a", "1", "b", "2"]).expect("runs"),
        commands(&[&["MSET", "u:a", "1", "u:b", "2"]])
    );
    assert_eq!(
        run(
            &s,
            &["ZUNIONSTORE", "d", "2", "x", "y", "WEIGHTS", "1", "2"]
        )
        .expect("runs"),
        commands(&[&["ZUNIONSTORE", "u:d", "2", "u:x", "u:y", "WEIGHTS", "1", "2"]])
    );
    // A command without keys never reaches the script.
    assert_eq!(
        run(&s, &["FLUSHALL"]).expect("bypasses"),
        Transformed::Unchanged
    );
    let keep = script("function transform(db, argv) return nil end");
    assert_eq!(
        run(&keep, &["SET", "k", "v"]).expect("runs"),
        Transformed::Unchanged
    );
    let drop = script("function transform(db, argv) return {} end");
    assert_eq!(run(&drop, &["SET", "k", "v"]).expect("runs"), commands(&[]));
}

#[test]
fn strings_are_binary_safe_both_ways() {
    let s = script(
        "function transform(db, argv) return {{argv[1], argv[2], argv[3] .. '\\0\\255'}} end",
    );
    let value: &[u8] = b"\x00\xff\x80v";
    let out = s
        .copy_command(3, &[&b"SET"[..], b"k\x00", value])
        .expect("runs");
    let mut expected = value.to_vec();
    expected.extend_from_slice(b"\x00\xff");
    assert_eq!(
        out,
        Transformed::Commands(vec![vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k\x00"),
            Bytes::from(expected)
        ]])
    );
}

#[test]
fn the_sandbox_has_no_io_os_require_debug_load_or_randomness() {
    let s = script(
        r#"
function transform(db, argv)
  local absent = {}
  for _, name in ipairs({"io", "os", "require", "debug", "package", "dofile", "loadfile",
                         "load", "collectgarbage", "print", "coroutine"}) do
    if _G[name] ~= nil then absent[#absent + 1] = name end
  end
  if math.random ~= nil or math.randomseed ~= nil then absent[#absent + 1] = "math.random" end
  if string.dump ~= nil then absent[#absent + 1] = "string.dump" end
  return {{"SET", argv[2], table.concat(absent, ",")}}
end
"#,
    );
    assert_eq!(
        run(&s, &["SET", "k", "v"]).expect("runs"),
        commands(&[&["SET", "k", ""]]),
        "every name listed must be nil in the sandbox"
    );
}

#[test]
fn bytecode_is_refused() {
    let bytecode = b"\x1bLua\x54\x00";
    let err = Script::load("t.lua", bytecode, ScriptLimits::default()).expect_err("refused");
    assert!(
        err.reason.contains("binary") || err.reason.contains("attempt to load"),
        "{err}"
    );
}

#[test]
fn globals_are_read_only_so_calls_keep_no_state() {
    let s = script("n = 0\nfunction transform(db, argv)\n  n = n + 1\n  return nil\nend");
    let err = run(&s, &["SET", "k", "v"]).expect_err("refused");
    assert!(err.reason.contains("assignment to global 'n'"), "{err}");
    assert!(err.reason.contains("t.lua:3:"), "the line is named: {err}");
}

#[test]
fn the_same_input_gives_the_same_output() {
    let s = script(RENAME);
    let first = run(&s, &["HSET", "h", "f", "v"]).expect("runs");
    for _ in 0..100 {
        assert_eq!(run(&s, &["HSET", "h", "f", "v"]).expect("runs"), first);
    }
    // A second state loaded from the same file (a restart) agrees.
    assert_eq!(
        run(&script(RENAME), &["HSET", "h", "f", "v"]).expect("runs"),
        first
    );
}

#[test]
fn an_error_names_the_command_the_key_and_the_line_never_a_value() {
    let s = script("function transform(db, argv)\n  local x = nil\n  return x.field\nend");
    let err = run(&s, &["SET", "user:1", "secret-value"]).expect_err("fails");
    let text = err.to_string();
    assert!(text.contains("t.lua:3:"), "{text}");
    assert!(text.contains("SET") && text.contains("user:1"), "{text}");
    assert!(!text.contains("secret-value"), "{text}");
    let thrown = script("function transform(db, argv)\n  error('no way')\nend");
    let text = run(&thrown, &["SET", "k", "v"])
        .expect_err("fails")
        .to_string();
    assert!(text.contains("t.lua:2: no way"), "{text}");
}

#[test]
fn a_syntax_error_or_no_transform_is_refused_at_load() {
    let err = load("function transform(db, argv)\n  return {{\nend").expect_err("refused");
    assert!(
        err.reason.contains("syntax error") && err.reason.contains("t.lua:"),
        "{err}"
    );
    let err = load("x = 1").expect_err("refused");
    assert!(err.reason.contains("transform"), "{err}");
    let err = load("error('boom')").expect_err("refused");
    assert!(err.reason.contains("t.lua:1: boom"), "{err}");
    let err = load("keys = {1}\nfunction transform() end").expect_err("refused");
    assert!(err.reason.contains("glob"), "{err}");
}

#[test]
fn an_endless_loop_stops_at_the_time_limit() {
    let limits = ScriptLimits {
        timeout: Duration::from_millis(50),
        ..ScriptLimits::default()
    };
    let s = Script::load(
        "t.lua",
        b"function transform(db, argv)\n  while true do end\nend",
        limits,
    )
    .expect("loads");
    let started = Instant::now();
    let err = run(&s, &["SET", "k", "v"]).expect_err("stopped");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.reason.contains("longer than 50 ms"), "{err}");
    // The next call has its own time again.
    let quick = Script::load(
        "t.lua",
        b"function transform(db, argv) return nil end",
        limits,
    )
    .expect("loads");
    assert!(run(&quick, &["SET", "k", "v"]).is_ok());
}

#[test]
fn an_allocation_without_bound_stops_at_the_memory_limit() {
    let limits = ScriptLimits {
        memory: 8 << 20,
        ..ScriptLimits::default()
    };
    let code = "function transform(db, argv)\n  local t = {}\n  local s = argv[2]\n  while true do s = s .. s; t[#t+1] = s end\nend";
    let s = Script::load("t.lua", code.as_bytes(), limits).expect("loads");
    let err = run(&s, &["SET", "k", "v"]).expect_err("stopped");
    assert!(err.reason.contains("more than 8 MiB"), "{err}");
}

#[test]
fn the_output_is_checked() {
    for (returned, expect) in [
        ("{{'MULTI'}}", "MULTI"),
        ("{{'SELECT', '1'}}", "SELECT"),
        ("{{'FLUSHALL'}}", "FLUSHALL"),
        ("{{'SWAPDB', '0', '1'}}", "SWAPDB"),
        ("{{'EVAL', 'return 1', '0'}}", "EVAL"),
        ("{{'SET', 'LOCKSTEP_CHECKPOINT', 'x'}}", "LOCKSTEP_"),
        ("{{'PUBLISH', 'c', 'm'}}", "names no key"),
        ("{{'NOSUCHCMD', 'k'}}", "cannot check"),
        ("{{'COPY', 'a', 'b', 'DB', '2'}}", "database 2"),
        ("{{'MOVE', 'k', '2'}}", "database 2"),
        ("{{'SET', 'k', 1.5}}", "number"),
        ("{{}}", "empty"),
        ("'SET'", "returned a string"),
        ("{{'SET', 'k', 'v', db = 2}}", "db = N"),
    ] {
        let s = script(&format!(
            "function transform(db, argv) return {returned} end"
        ));
        let err = run(&s, &["SET", "k", "v"]).expect_err(returned);
        assert!(err.reason.contains(expect), "{returned}: {err}");
    }
    let mv = script("function transform(db, argv) return {{'MOVE', 'u:' .. argv[2], argv[3]}} end");
    assert_eq!(
        run(&mv, &["MOVE", "k", "3"]).expect("same database"),
        commands(&[&["MOVE", "u:k", "3"]])
    );
    let s = script(
        "function transform(db, argv) return {{'SET', argv[2], 7}, {'PEXPIRE', argv[2], 1000}} end",
    );
    assert_eq!(
        run(&s, &["SET", "k", "v"]).expect("two commands for one"),
        commands(&[&["SET", "k", "7"], &["PEXPIRE", "k", "1000"]])
    );
}

#[test]
fn keys_globs_choose_what_goes_through_the_script() {
    let s = script("keys = {'user:*', 'h[ab]?'}\nfunction transform(db, argv) return {} end");
    assert!(s.touches_key(b"user:1") && s.touches_key(b"hax") && !s.touches_key(b"hcx"));
    assert_eq!(
        run(&s, &["DEL", "a", "user:2"]).expect("taken"),
        commands(&[])
    );
    assert_eq!(
        run(&s, &["SET", "other", "v"]).expect("bypasses"),
        Transformed::Unchanged
    );
    assert_eq!(
        run(&s, &["FLUSHALL"]).expect("bypasses"),
        Transformed::Unchanged
    );
    let err = run(&s, &["NOSUCHCMD", "user:1"]).expect_err("unknown keys");
    assert!(err.reason.contains("--drop-command"), "{err}");
    let all = script("function transform(db, argv) return nil end");
    assert!(all.touches_key(b"anything"));
}

#[test]
fn redis_globs() {
    for (pattern, text, expected) in [
        ("*", "", true),
        ("a*", "abc", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbb", false),
        ("?", "", false),
        ("h?llo", "hello", true),
        ("h[ae]llo", "hallo", true),
        ("h[^e]llo", "hello", false),
        ("h[a-b]llo", "hbllo", true),
        ("h[b-a]llo", "hallo", true),
        ("h\\*llo", "h*llo", true),
        ("h\\*llo", "hello", false),
        ("user:*:x", "user:1:x", true),
        ("exact", "exactly", false),
    ] {
        assert_eq!(
            glob_match(pattern.as_bytes(), text.as_bytes()),
            expected,
            "{pattern} {text}"
        );
    }
}

#[test]
fn a_script_refuses_rules_that_clear_by_key() {
    assert!(check_filter(&Filter::default()).is_ok());
    let dbs = Filter {
        dbs: vec![1],
        db_map: vec![(1, 2)],
        ..Filter::default()
    };
    assert!(check_filter(&dbs).is_ok());
    let prefix = Filter {
        include_prefixes: vec![b"a".to_vec()],
        ..Filter::default()
    };
    assert!(check_filter(&prefix)
        .expect_err("refused")
        .contains("--prefix"));
    let shard = Filter {
        source_slots: vec![(0, 10)],
        ..Filter::default()
    };
    assert!(check_filter(&shard)
        .expect_err("refused")
        .contains("cluster source"));
}
