//! The frames' kept-image references, for the flagged-images folder's size cap
//! ([`crate::flagged`]): which images may be evicted, which are referenced, forgetting them.

use chrono::Utc;
use rusqlite::params;

use super::error::sql_error;
use super::{Store, StoreError, format_time};

impl Store {
    /// Kept images of sessions that are no longer open, oldest first: `(frame id, path)`.
    pub(crate) fn evictable_images(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT f.id, f.kept_image FROM frames f JOIN sessions s ON s.id = f.session_id
                 WHERE f.kept_image IS NOT NULL AND s.state != 'open'
                 ORDER BY f.id LIMIT ?1",
            )
            .map_err(|e| self.err("find kept images", e))?;
        st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err("find kept images", e))
    }

    /// Every kept image path still referenced.
    pub(crate) fn referenced_images(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT kept_image FROM frames WHERE kept_image IS NOT NULL")
            .map_err(|e| self.err("find kept images", e))?;
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("find kept images", e))
    }

    /// Drops the image references of these frames (one transaction), noting when.
    pub(crate) fn forget_images(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |e| sql_error(&path, "forget evicted images", e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE frames SET kept_image = NULL, image_evicted = ?2 WHERE id = ?1",
                )
                .map_err(e)?;
            let now = format_time(&Utc::now());
            for id in ids {
                st.execute(params![id, now]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }
}
