//! Bans across the cluster: a ban is a command of `meta` (`Cluster::ban`), and every node
//! enforces it as it applies it (`ban_changed`), kicking the matching clients it holds. A
//! ban made while the node has not entered its cluster yet (a flapping client at start)
//! holds on this node only.

use shoal_access::ban::{Ban, BanTarget};
use shoal_cluster::BanRecord;

use super::Broker;
use super::retained::MigrateError;

impl Broker {
    /// Bans `ban.target` on every node; returns once every live node applied it.
    pub(crate) async fn ban(&self, ban: Ban) -> Result<(), String> {
        let cluster = self.joined_cluster()?;
        cluster
            .ban(&ban.target.to_string(), record_of(&ban))
            .await
            .map_err(|e| e.to_string())
    }

    /// Lifts the ban of `target` on every node; false if there was none.
    pub(crate) async fn unban(&self, target: &BanTarget) -> Result<bool, String> {
        let cluster = self.joined_cluster()?;
        let lifted = cluster
            .unban(&target.to_string())
            .await
            .map_err(|e| e.to_string())?;
        // A ban made here before the node entered its cluster is not in `meta`.
        Ok(self.access.remove_ban(target) || lifted)
    }

    /// Counts a connect of `client_id`; when it flaps, bans it here at once and on every
    /// node through the cluster, and says why.
    pub(crate) fn flapped(&self, client_id: &str) -> Option<String> {
        let ban = self.access.flapping(client_id)?;
        let why = format!("banned ({}): {}", ban.target, ban.reason);
        if let Some(cluster) = self.cluster().cloned() {
            let target = ban.target.to_string();
            let record = record_of(&ban);
            tokio::spawn(async move {
                if let Err(e) = cluster.ban(&target, record).await {
                    tracing::warn!(%target, error = %e, "a flapping ban holds on this node only: the cluster did not take it");
                }
            });
        }
        Some(why)
    }

    /// `meta` applied a change of the ban of `target`: enforce it here.
    pub(crate) fn ban_changed(&self, target: &str, record: Option<&BanRecord>) {
        let target: BanTarget = match target.parse() {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(target, error = %e, "a replicated ban names no valid target; ignored");
                return;
            }
        };
        match record {
            Some(record) => {
                let ban = Ban {
                    target,
                    until: record.until,
                    reason: record.reason.clone(),
                    created: record.created,
                };
                if ban.is_active(self.access.now()) {
                    self.kick_banned(&ban);
                }
                self.access.add_ban(ban);
            }
            None => {
                self.access.remove_ban(&target);
            }
        }
    }

    /// Moves the bans of a data folder written before bans were replicated (`bans.json`)
    /// into `meta`, then removes the file. Runs once the node has entered its cluster;
    /// a crash half-way moves them again at the next start (setting a ban twice is
    /// harmless). Returns how many moved.
    pub(crate) async fn migrate_bans(
        &self,
        cluster: &shoal_cluster::Cluster,
    ) -> Result<usize, MigrateError> {
        let saved = self.access.saved_bans();
        for ban in &saved {
            cluster.ban(&ban.target.to_string(), record_of(ban)).await?;
        }
        self.access
            .forget_saved_bans()
            .map_err(|e| MigrateError::Task(format!("bans.json not removed: {e}")))?;
        if !saved.is_empty() {
            tracing::info!(
                moved = saved.len(),
                "bans moved from bans.json into the cluster"
            );
        }
        Ok(saved.len())
    }
}

fn record_of(ban: &Ban) -> BanRecord {
    BanRecord {
        until: ban.until,
        reason: ban.reason.clone(),
        created: ban.created,
    }
}
