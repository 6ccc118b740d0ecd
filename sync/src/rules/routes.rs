//! Database routing by key pattern (`--route-db GLOB=DB`, issue 17): a kept key whose
//! source name matches a route's glob is written into that route's target database
//! instead of the database its source database maps to. The first route that matches
//! wins; a key no route matches goes where it goes without routes.
//!
//! Routes judge source names, as every rule of [`crate::filter::Filter`] does (before
//! `--rename-prefix` / `--rename-regex`). The filter applies them to the stream (a
//! command's keys are grouped by database; each group runs in its own database:
//! [`crate::filter::Filter::command`]) and the full copy selects each key's database
//! ([`crate::load`]). What makes routes exact, checked by
//! [`crate::filter::Filter::validate`]: the task reads exactly one source database
//! (two would write the keys a route matches in both into one database), and a
//! route's database is not one another part of the task writes whole.
//!
//! Which keys of a target database are the task's: in a route's database the keys
//! routed there, in the main one the keys routed nowhere
//! ([`crate::filter::Filter::owns_key_in`]), so a resync or a FLUSHDB never removes
//! another task's keys from a database the routes share.

use super::glob::{Glob, GlobError};

/// The routes of a task, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbRoutes {
    routes: Vec<(Glob, u32)>,
}

impl DbRoutes {
    /// Compiles `(glob, database)` pairs; the error names the flag and the pattern.
    pub fn new(routes: &[(String, u32)]) -> Result<DbRoutes, String> {
        let routes = routes
            .iter()
            .map(|(glob, db)| {
                Glob::new(glob)
                    .map(|g| (g, *db))
                    .map_err(|e: GlobError| format!("--route-db: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DbRoutes { routes })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The database of the first route whose glob matches source key `key`.
    pub fn route(&self, key: &[u8]) -> Option<u32> {
        self.routes
            .iter()
            .find(|(glob, _)| glob.matches(key))
            .map(|(_, db)| *db)
    }

    /// The routes' databases, each once, in the order given.
    pub fn dbs(&self) -> Vec<u32> {
        let mut dbs: Vec<u32> = Vec::with_capacity(self.routes.len());
        for (_, db) in &self.routes {
            if !dbs.contains(db) {
                dbs.push(*db);
            }
        }
        dbs
    }

    /// The routes as given: (glob, database).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.routes.iter().map(|(glob, db)| (glob.as_str(), *db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(pairs: &[(&str, u32)]) -> DbRoutes {
        let pairs: Vec<(String, u32)> = pairs.iter().map(|(g, d)| (g.to_string(), *d)).collect();
        DbRoutes::new(&pairs).expect("valid routes")
    }

    #[test]
    fn the_first_matching_route_wins() {
        let r = routes(&[("session:*", 1), ("s*", 2), ("cache:*", 1)]);
        assert_eq!(r.route(b"session:42"), Some(1));
        assert_eq!(r.route(b"stats"), Some(2));
        assert_eq!(r.route(b"cache:x"), Some(1));
        assert_eq!(r.route(b"user:1"), None);
        assert_eq!(r.route(b""), None);
        assert_eq!(r.dbs(), vec![1, 2]);
    }

    #[test]
    fn binary_keys_are_routed_by_their_bytes() {
        let r = routes(&[("b\\*in*", 3)]);
        assert_eq!(r.route(b"b*in\xff\x00"), Some(3));
        assert_eq!(r.route(b"bin\xff"), None);
    }

    #[test]
    fn a_bad_glob_names_the_flag() {
        let bad = DbRoutes::new(&[("[a".to_string(), 1)]);
        assert!(bad.is_err_and(|e| e.starts_with("--route-db")));
    }
}
