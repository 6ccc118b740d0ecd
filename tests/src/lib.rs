//! End-to-end and chaos tests of lockstep live in `tests/tests/`; this library is empty.
