//! The resume decision, as pure state: from the target's checkpoint key, the
//! checkpoint file and the task's mode, where to ask the source to resume
//! ([`ResumePlan`]); then, from the source's answer, how the session starts
//! ([`Start`]): continue the stream, skip the snapshot, or copy, with positions
//! (`+FULLRESYNC`) or without (`SYNC`), clearing the task's keys first when the
//! target may hold keys the source no longer has.
//!
//! The session reads the inputs and acts on the outputs; this module never does
//! I/O, and it never turns an unknown into a guess: a `+CONTINUE` with nothing asked
//! is an error, not a continuation from zero.

use crate::checkpoint::Checkpoint;
use crate::source::PsyncReply;

use super::error::SyncError;
use super::options::Mode;

/// What the session knows before it asks the source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Known {
    /// The target's own checkpoint key (exact: written with the data).
    pub on_target: Option<Checkpoint>,
    /// The checkpoint file's last position (may lag the target by an interval).
    pub in_file: Option<Checkpoint>,
    /// The file's marker says an earlier full copy did not end with a resume
    /// point: it was cut short, or it was a `SYNC` copy (which has none).
    pub full_copy_interrupted: bool,
}

/// How the checkpoint file must change before the source is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FileFix {
    Keep,
    /// The target's key differs from the file: the target's position is the one to
    /// resume from and count up from (the file may hold a later offset of entries
    /// that applied nothing, such as PING).
    Replace(Checkpoint),
    /// The target lost what was written with its checkpoint key: the file's
    /// position would resume over missing data, and it is the only record that the
    /// target may hold stale keys. So it is cleared only once the target's clear
    /// has succeeded (the full copy's first step), never before PSYNC: a session
    /// that fails before that leaves the next one the same reason to clear.
    ClearAfterTargetClear,
}

impl FileFix {
    /// The checkpoint the file must hold before the source is asked, when it must
    /// change then. [`FileFix::ClearAfterTargetClear`] changes nothing yet.
    pub fn before_psync(&self) -> Option<&Checkpoint> {
        match self {
            FileFix::Replace(exact) => Some(exact),
            FileFix::Keep | FileFix::ClearAfterTargetClear => None,
        }
    }
}

/// Where to ask the source to resume, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ResumePlan {
    pub file: FileFix,
    /// The position PSYNC asks for; `None` asks for everything (`PSYNC ? -1`).
    pub resume: Option<Checkpoint>,
    /// The file says a checkpoint was written, yet the target has no checkpoint
    /// key (restarted without persistence, or flushed). Not in incremental-only
    /// mode, which never copies: there the file is the resume point.
    pub target_lost_data: bool,
    /// An incremental-only task with nowhere to resume from: it asks for a full
    /// resync (a source with no replica yet has no backlog) and drops the snapshot.
    pub skip_snapshot: bool,
    full_copy_interrupted: bool,
}

/// How the session starts, from the plan and the source's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// The source continues from the plan's position (`replid` adopted when the
    /// source announced a new one, after a failover).
    Continue {
        replid: String,
        offset: i64,
        db: u32,
    },
    /// Incremental only: the snapshot is read and dropped; the stream starts here.
    SkipSnapshot { replid: String, offset: i64 },
    /// A full copy, the stream then starting at `offset`. `stale` says why the
    /// target may hold keys the source no longer has: remove the task's keys first.
    FullCopy {
        replid: String,
        offset: i64,
        stale: Option<String>,
    },
    /// `SYNC`: a full copy with no replication id or offset, hence no resume point:
    /// the next session copies again. `stale` as for [`Start::FullCopy`].
    CopyWithoutPositions { stale: Option<String> },
}

/// How the source refused to continue: named in the reason to clear, since the
/// program knows which of the two it was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// `+FULLRESYNC`: the position is not in its backlog or of its history.
    FullResync,
    /// `PSYNC` refused, `SYNC` served: it continues from no position at all.
    Sync,
}

impl ResumePlan {
    /// The plan for what is `known`, in `mode`.
    pub fn new(known: Known, mode: Mode) -> ResumePlan {
        let Known {
            on_target,
            in_file,
            full_copy_interrupted,
        } = known;
        let target_lost_data =
            on_target.is_none() && in_file.is_some() && mode != Mode::Incremental;
        let file = match &on_target {
            Some(exact) if in_file.as_ref() != Some(exact) => FileFix::Replace(exact.clone()),
            None if target_lost_data => FileFix::ClearAfterTargetClear,
            _ => FileFix::Keep,
        };
        let resume = match (on_target, target_lost_data) {
            (Some(exact), _) => Some(exact),
            (None, true) => None,
            (None, false) => in_file,
        };
        ResumePlan {
            file,
            skip_snapshot: resume.is_none() && mode == Mode::Incremental,
            resume,
            target_lost_data,
            full_copy_interrupted,
        }
    }

    /// What PSYNC asks for: `(replid, offset)`, or `None` for everything.
    pub fn psync_from(&self) -> Option<(&str, i64)> {
        self.resume
            .as_ref()
            .map(|cp| (cp.replid.as_str(), cp.offset))
    }

    /// How the session starts when the source answered `reply`.
    pub fn start(&self, reply: PsyncReply) -> Result<Start, SyncError> {
        Ok(match reply {
            PsyncReply::Continue { replid } => {
                let resume = self.resume.as_ref().ok_or_else(|| {
                    SyncError::Internal("+CONTINUE without a resume point".into())
                })?;
                Start::Continue {
                    replid: replid.unwrap_or_else(|| resume.replid.clone()),
                    offset: resume.offset,
                    db: resume.db,
                }
            }
            PsyncReply::FullResync { replid, offset } if self.skip_snapshot => {
                Start::SkipSnapshot { replid, offset }
            }
            PsyncReply::FullResync { replid, offset } => Start::FullCopy {
                replid,
                offset,
                stale: self.why_stale(Refusal::FullResync),
            },
            PsyncReply::Sync => Start::CopyWithoutPositions {
                stale: self.why_stale(Refusal::Sync),
            },
        })
    }

    /// Why the target may hold keys the source no longer has before a full copy
    /// (the source having `refused` to continue): a checkpoint it could not
    /// continue, a target that lost its checkpoint key, or an earlier copy that did
    /// not end with a resume point. `None` only when no task of ours is known to have
    /// written to the target: a first copy never clears.
    fn why_stale(&self, refused: Refusal) -> Option<String> {
        let why = match (&self.resume, refused) {
            (Some(cp), Refusal::FullResync) => format!("the source could not continue from {}:{} (backlog overrun or new history)", cp.replid, cp.offset),
            (Some(cp), Refusal::Sync) => format!("the source refused PSYNC and served SYNC, which cannot continue from {}:{}", cp.replid, cp.offset),
            (None, _) if self.target_lost_data => "the target no longer holds lockstep's checkpoint key, which the checkpoint file says was written: it lost data (restarted without persistence, or flushed)".to_owned(),
            (None, _) if self.full_copy_interrupted => "an earlier full copy did not end with a resume point (cut short, or copied by SYNC, which has none)".to_owned(),
            (None, _) => return None,
        };
        Some(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cp(replid: &str, offset: i64, db: u32) -> Checkpoint {
        Checkpoint {
            replid: replid.to_owned(),
            offset,
            db,
        }
    }

    fn full_resync() -> PsyncReply {
        PsyncReply::FullResync {
            replid: "new".into(),
            offset: 500,
        }
    }

    const MODES: [Mode; 3] = [Mode::Full, Mode::Incremental, Mode::FullAndIncremental];

    #[test]
    fn no_checkpoint_asks_for_everything_and_copies_over_a_clean_target() {
        let plan = ResumePlan::new(Known::default(), Mode::FullAndIncremental);
        assert_eq!(plan.file, FileFix::Keep);
        assert_eq!(plan.psync_from(), None);
        assert!(!plan.skip_snapshot && !plan.target_lost_data);
        let start = plan
            .start(full_resync())
            .expect("a full resync starts a copy");
        assert_eq!(
            start,
            Start::FullCopy {
                replid: "new".into(),
                offset: 500,
                stale: None
            }
        );
    }

    #[test]
    fn an_interrupted_copy_clears_the_target_first() {
        let known = Known {
            full_copy_interrupted: true,
            ..Known::default()
        };
        let plan = ResumePlan::new(known, Mode::FullAndIncremental);
        let Ok(Start::FullCopy {
            stale: Some(why), ..
        }) = plan.start(full_resync())
        else {
            panic!("a full copy with a reason to clear");
        };
        assert!(why.contains("cut short"), "{why}");
        assert!(why.contains("did not end with a resume point"), "{why}");
    }

    #[test]
    fn the_target_ahead_of_the_file_wins_and_rewrites_the_file() {
        let known = Known {
            on_target: Some(cp("a", 120, 3)),
            in_file: Some(cp("a", 100, 0)),
            ..Known::default()
        };
        let plan = ResumePlan::new(known, Mode::FullAndIncremental);
        assert_eq!(plan.file, FileFix::Replace(cp("a", 120, 3)));
        assert_eq!(plan.psync_from(), Some(("a", 120)));
    }

    #[test]
    fn the_file_ahead_of_the_target_is_replaced_by_the_target_position() {
        // The file may count PINGs the target never saw a transaction for.
        let known = Known {
            on_target: Some(cp("a", 100, 1)),
            in_file: Some(cp("a", 130, 1)),
            ..Known::default()
        };
        let plan = ResumePlan::new(known, Mode::Incremental);
        assert_eq!(plan.file, FileFix::Replace(cp("a", 100, 1)));
        assert_eq!(plan.psync_from(), Some(("a", 100)));
        assert!(!plan.skip_snapshot);
    }

    #[test]
    fn equal_checkpoints_leave_the_file_alone() {
        let known = Known {
            on_target: Some(cp("a", 100, 1)),
            in_file: Some(cp("a", 100, 1)),
            ..Known::default()
        };
        assert_eq!(
            ResumePlan::new(known, Mode::FullAndIncremental).file,
            FileFix::Keep
        );
    }

    #[test]
    fn a_target_that_lost_its_key_is_copied_again_after_clearing() {
        let known = Known {
            in_file: Some(cp("a", 100, 0)),
            ..Known::default()
        };
        for mode in [Mode::Full, Mode::FullAndIncremental] {
            let plan = ResumePlan::new(known.clone(), mode);
            assert_eq!(plan.file, FileFix::ClearAfterTargetClear);
            assert_eq!(
                plan.file.before_psync(),
                None,
                "the file keeps its position"
            );
            assert!(plan.target_lost_data);
            assert_eq!(plan.psync_from(), None, "never resume over missing data");
            let Ok(Start::FullCopy {
                stale: Some(why), ..
            }) = plan.start(full_resync())
            else {
                panic!("a full copy with a reason to clear");
            };
            assert!(why.contains("lost data"), "{why}");
        }
    }

    #[test]
    fn incremental_only_resumes_from_the_file_when_the_target_has_no_key() {
        let known = Known {
            in_file: Some(cp("a", 100, 2)),
            ..Known::default()
        };
        let plan = ResumePlan::new(known, Mode::Incremental);
        assert_eq!(plan.file, FileFix::Keep);
        assert!(!plan.target_lost_data && !plan.skip_snapshot);
        assert_eq!(plan.psync_from(), Some(("a", 100)));
    }

    #[test]
    fn incremental_only_with_nowhere_to_resume_skips_the_snapshot() {
        let plan = ResumePlan::new(Known::default(), Mode::Incremental);
        assert!(plan.skip_snapshot);
        assert_eq!(
            plan.start(full_resync()).expect("skip"),
            Start::SkipSnapshot {
                replid: "new".into(),
                offset: 500
            }
        );
    }

    #[test]
    fn continue_resumes_at_the_checkpoint_and_adopts_a_new_replid() {
        let known = Known {
            on_target: Some(cp("old", 100, 4)),
            ..Known::default()
        };
        let plan = ResumePlan::new(known, Mode::FullAndIncremental);
        let same = plan.start(PsyncReply::Continue { replid: None });
        let changed = plan.start(PsyncReply::Continue {
            replid: Some("promoted".into()),
        });
        let at = |replid: &str| Start::Continue {
            replid: replid.into(),
            offset: 100,
            db: 4,
        };
        assert_eq!(same.expect("continue"), at("old"));
        assert_eq!(changed.expect("continue"), at("promoted"));
    }

    #[test]
    fn a_source_that_cannot_continue_makes_the_copy_clear_first() {
        // Backlog overrun, or a replid of another history.
        let known = Known {
            on_target: Some(cp("old", 100, 0)),
            in_file: Some(cp("old", 100, 0)),
            ..Known::default()
        };
        let plan = ResumePlan::new(known, Mode::FullAndIncremental);
        let Ok(Start::FullCopy {
            stale: Some(why),
            offset,
            ..
        }) = plan.start(full_resync())
        else {
            panic!("a full copy with a reason to clear");
        };
        assert_eq!(offset, 500);
        assert!(why.contains("old:100"), "{why}");
    }

    #[test]
    fn continue_without_a_resume_point_is_an_error_not_offset_zero() {
        let plan = ResumePlan::new(Known::default(), Mode::FullAndIncremental);
        let answer = plan.start(PsyncReply::Continue { replid: None });
        assert!(matches!(answer, Err(SyncError::Internal(_))), "{answer:?}");
    }

    #[test]
    fn sync_copies_without_positions_in_every_mode() {
        for mode in MODES {
            let plan = ResumePlan::new(Known::default(), mode);
            assert_eq!(
                plan.start(PsyncReply::Sync).expect("sync"),
                Start::CopyWithoutPositions { stale: None },
                "a first copy over a target no task of ours wrote to never clears"
            );
        }
    }

    /// The reason a `SYNC` copy gives to clear first, for what is `known`.
    fn why_a_sync_copy_clears(known: Known, mode: Mode) -> String {
        let plan = ResumePlan::new(known, mode);
        match plan.start(PsyncReply::Sync) {
            Ok(Start::CopyWithoutPositions { stale: Some(why) }) => why,
            other => panic!("a SYNC copy with a reason to clear, not {other:?}"),
        }
    }

    #[test]
    fn a_sync_copy_after_a_copy_without_a_resume_point_clears_first() {
        // Found by reading (session 7): the marker of a cut PSYNC copy, or of any
        // SYNC copy (it never ends with a resume point), was ignored after SYNC.
        let known = Known {
            full_copy_interrupted: true,
            ..Known::default()
        };
        for mode in MODES {
            let why = why_a_sync_copy_clears(known.clone(), mode);
            assert!(why.contains("did not end with a resume point"), "{why}");
            assert!(why.contains("cut short") && why.contains("SYNC"), "{why}");
        }
    }

    #[test]
    fn a_sync_copy_over_a_target_that_lost_its_key_clears_first() {
        let known = Known {
            in_file: Some(cp("a", 100, 0)),
            ..Known::default()
        };
        for mode in [Mode::Full, Mode::FullAndIncremental] {
            let why = why_a_sync_copy_clears(known.clone(), mode);
            assert!(why.contains("lost data"), "{why}");
        }
    }

    #[test]
    fn a_sync_copy_over_a_checkpoint_the_source_cannot_continue_clears_first() {
        // The target's key, or in incremental-only mode the file's position.
        let on_target = Known {
            on_target: Some(cp("old", 100, 2)),
            ..Known::default()
        };
        let in_file = Known {
            in_file: Some(cp("old", 100, 2)),
            ..Known::default()
        };
        for (known, mode) in [
            (on_target.clone(), Mode::FullAndIncremental),
            (on_target, Mode::Full),
            (in_file, Mode::Incremental),
        ] {
            let why = why_a_sync_copy_clears(known, mode);
            assert!(
                why.contains("served SYNC") && why.contains("old:100"),
                "{why}"
            );
        }
    }

    fn checkpoint() -> impl Strategy<Value = Option<Checkpoint>> {
        proptest::option::of(
            (prop::sample::select(vec!["a", "b"]), 0i64..1000, 0u32..16)
                .prop_map(|(id, offset, db)| cp(id, offset, db)),
        )
    }

    fn reply() -> impl Strategy<Value = PsyncReply> {
        prop_oneof![
            Just(PsyncReply::Sync),
            proptest::option::of(Just("c".to_owned()))
                .prop_map(|replid| PsyncReply::Continue { replid }),
            (0i64..1000).prop_map(|offset| PsyncReply::FullResync {
                replid: "c".into(),
                offset
            }),
        ]
    }

    /// What the next session knows when this one failed right after the fix it
    /// makes to the file before PSYNC (the target untouched).
    fn after_a_failed_psync(known: &Known, plan: &ResumePlan) -> Known {
        Known {
            in_file: plan.file.before_psync().cloned().or(known.in_file.clone()),
            ..known.clone()
        }
    }

    #[test]
    fn a_session_that_fails_before_clearing_a_lost_target_leaves_the_reason_to_clear() {
        // Found by reading (issue 15): the file was cleared before PSYNC, so after a
        // failed PSYNC the next session copied over the stale target unclear.
        let known = Known {
            in_file: Some(cp("a", 100, 0)),
            ..Known::default()
        };
        let plan = ResumePlan::new(known.clone(), Mode::FullAndIncremental);
        let next = ResumePlan::new(
            after_a_failed_psync(&known, &plan),
            Mode::FullAndIncremental,
        );
        assert!(next.target_lost_data);
        assert!(matches!(
            next.start(full_resync()),
            Ok(Start::FullCopy { stale: Some(_), .. })
        ));
    }

    proptest! {
        /// Whatever a session decides, failing right after its file fix (before the
        /// source answers) leaves the next one the same decision: a reason to clear
        /// the target is never lost with the session.
        #[test]
        fn a_failed_psync_changes_no_decision(
            on_target in checkpoint(),
            in_file in checkpoint(),
            full_copy_interrupted: bool,
            mode in prop::sample::select(MODES.to_vec()),
        ) {
            let known = Known { on_target, in_file, full_copy_interrupted };
            let plan = ResumePlan::new(known.clone(), mode);
            let next = ResumePlan::new(after_a_failed_psync(&known, &plan), mode);
            prop_assert_eq!(&next.resume, &plan.resume);
            prop_assert_eq!(next.target_lost_data, plan.target_lost_data);
            prop_assert_eq!(next.start(full_resync()).ok(), plan.start(full_resync()).ok());
            prop_assert_eq!(next.file.before_psync(), None, "the fix is made once");
        }

        /// The invariants of every combination: the target's key, when there is
        /// one, is the resume point and what the file ends up holding; nothing is
        /// resumed over a lost target; a stale target is cleared before a copy.
        #[test]
        fn every_combination_keeps_the_invariants(
            on_target in checkpoint(),
            in_file in checkpoint(),
            full_copy_interrupted: bool,
            mode in prop::sample::select(MODES.to_vec()),
            reply in reply(),
        ) {
            let known = Known { on_target: on_target.clone(), in_file: in_file.clone(), full_copy_interrupted };
            let plan = ResumePlan::new(known, mode);
            if let Some(exact) = &on_target {
                prop_assert_eq!(plan.resume.as_ref(), Some(exact));
                prop_assert_ne!(&plan.file, &FileFix::ClearAfterTargetClear);
            }
            if plan.target_lost_data {
                prop_assert!(plan.resume.is_none() && plan.file == FileFix::ClearAfterTargetClear);
                prop_assert!(mode != Mode::Incremental);
            }
            prop_assert_eq!(plan.skip_snapshot, plan.resume.is_none() && mode == Mode::Incremental);
            let must_clear = plan.resume.is_some() || plan.target_lost_data || full_copy_interrupted;
            match plan.start(reply.clone()) {
                Ok(Start::Continue { offset, db, .. }) => {
                    let resume = plan.resume.as_ref().expect("continue needs a resume point");
                    prop_assert_eq!((offset, db), (resume.offset, resume.db));
                }
                Ok(Start::FullCopy { stale, .. }) => {
                    prop_assert_eq!(stale.is_some(), must_clear);
                    prop_assert!(!plan.skip_snapshot);
                }
                Ok(Start::SkipSnapshot { .. }) => prop_assert!(plan.skip_snapshot),
                Ok(Start::CopyWithoutPositions { stale }) => {
                    prop_assert_eq!(&reply, &PsyncReply::Sync);
                    prop_assert_eq!(stale.is_some(), must_clear);
                }
                Err(_) => prop_assert!(plan.resume.is_none()),
            }
        }
    }
}
