//! What a run found and may claim: the differences ([`difference`]), the report and
//! its verdict ([`run`]), the coverage ([`coverage`]), the compact sets of differing
//! keys and covered slots ([`track`]), the CSV and JSON outputs ([`output`]), and what
//! a sample proves ([`statement`]).
//!
//! Plain data and its formatting; it must never read either side.

pub mod coverage;
pub mod difference;
pub mod output;
pub mod run;
pub mod statement;
pub mod track;
