//! Golden files: expected output stored under `cli/tests/golden/`, compared by tests.
//! Run the tests with `UPDATE_GOLDEN=1` to rewrite the files from the actual output
//! (then review the diff with `git diff cli/tests/golden`). Shared by the unit tests
//! of the binary and the integration tests (`#[path]`-included there).
//!
//! It is test support only: the binary never reads a golden file.

/// Compares `actual` with the file at `path`, or rewrites the file when
/// `UPDATE_GOLDEN=1`.
pub fn check(path: &str, actual: &str) {
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        if let Err(err) = std::fs::write(path, actual) {
            panic!("cannot write the golden file {path}: {err}");
        }
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        expected == actual,
        "{path} differs from the actual output (rerun with UPDATE_GOLDEN=1 to accept it, \
         then review `git diff cli/tests/golden`)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}
