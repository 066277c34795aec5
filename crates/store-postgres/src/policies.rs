//! Policy snapshots, stored once per distinct policy and named by id from the jobs' rows
//! (migration 0021).

use super::*;
use retryd_core::policy::Policy;
use std::sync::Mutex;

/// A process keeps at most this many snapshot ids; a full map is cleared, not grown.
const MOST_KNOWN: usize = 4096;
/// Where `policy_id` is among the job columns (`job_columns!`).
pub(crate) const POLICY_ID: usize = 32;

/// The snapshots this process has stored or read: their ids by the policy's JSON text (for
/// new jobs), their policies by id (for the jobs it reads). Snapshots are never deleted or
/// changed, so what is known stays right.
#[derive(Debug, Default)]
pub(crate) struct PolicySnapshots {
    // A std Mutex: held only to look up or record, never across .await.
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    ids: HashMap<String, i64>,
    policies: HashMap<i64, Policy>,
}

impl Known {
    /// Records a snapshot, and by `text` too when that is how this process encodes it.
    fn record(&mut self, text: Option<&str>, id: i64, policy: &Policy) {
        if self.ids.len() >= MOST_KNOWN || self.policies.len() >= MOST_KNOWN {
            *self = Known::default();
        }
        if let Some(text) = text {
            self.ids.insert(text.to_owned(), id);
        }
        self.policies.insert(id, policy.clone());
    }
}

impl PolicySnapshots {
    /// The snapshot id of each policy, in order. Policies not seen before are stored first,
    /// in statements of their own: committed even when the caller's batch is not, since an
    /// unused snapshot is harmless and an id of one rolled back would name nothing.
    pub(crate) async fn ids<'a>(
        &self,
        client: &impl GenericClient,
        policies: impl Iterator<Item = &'a Policy>,
    ) -> Result<Vec<i64>> {
        // Each distinct policy once, as JSON text; a run of equal policies (the usual batch)
        // is compared, not encoded again.
        let mut texts: Vec<String> = Vec::new();
        let mut distinct: Vec<&Policy> = Vec::new();
        let mut index_of: HashMap<String, usize> = HashMap::new();
        let mut slots: Vec<usize> = Vec::new();
        let mut previous: Option<(&Policy, usize)> = None;
        for policy in policies {
            let slot = match previous {
                Some((p, slot)) if p == policy => slot,
                _ => {
                    let text = serde_json::to_string(policy).map_err(corrupt)?;
                    *index_of.entry(text).or_insert_with_key(|text| {
                        texts.push(text.clone());
                        distinct.push(policy);
                        texts.len() - 1
                    })
                }
            };
            previous = Some((policy, slot));
            slots.push(slot);
        }
        let mut ids: Vec<Option<i64>> = {
            let known = self.known.lock().expect("policy snapshots");
            texts.iter().map(|t| known.ids.get(t).copied()).collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| ids[i].is_none()).collect();
        if !missing.is_empty() {
            let docs: Vec<&str> = missing.iter().map(|&i| texts[i].as_str()).collect();
            // Two statements, sent together, each its own transaction: the look-up sees a
            // snapshot another node stored meanwhile (the insert waited for its commit).
            let ((), rows) = futures::try_join!(
                async {
                    client
                        .cached_execute(
                            "INSERT INTO policy_snapshots (doc) SELECT DISTINCT unnest($1::text[])::jsonb \
                             ON CONFLICT (doc) DO NOTHING",
                            &[&docs],
                        )
                        .await
                        .map(drop)
                        .map_err(pg)
                },
                async {
                    client
                        .cached_query(
                            "SELECT t.i, s.id FROM unnest($1::text[]) WITH ORDINALITY AS t(doc, i) \
                             JOIN policy_snapshots s ON s.doc = t.doc::jsonb",
                            &[&docs],
                        )
                        .await
                        .map_err(pg)
                },
            )?;
            let mut known = self.known.lock().expect("policy snapshots");
            for row in &rows {
                let i = missing[usize::try_from(row.get::<_, i64>(0) - 1).map_err(corrupt)?];
                let id: i64 = row.get(1);
                ids[i] = Some(id);
                known.record(Some(&texts[i]), id, distinct[i]);
            }
        }
        let ids: Vec<i64> = ids
            .into_iter()
            .map(|id| id.ok_or_else(|| corrupt("a policy snapshot was not stored")))
            .collect::<Result<_>>()?;
        Ok(slots.into_iter().map(|slot| ids[slot]).collect())
    }

    /// The policies of the snapshots `rows` (selected with `LEAN_JOB_COLUMNS`) name, by id:
    /// from what this process knows, and what it does not in one query.
    pub(crate) async fn resolve(
        &self,
        client: &impl GenericClient,
        rows: &[Row],
    ) -> Result<HashMap<i64, Policy>> {
        let mut wanted: Vec<i64> = rows
            .iter()
            .filter_map(|row| row.get::<_, Option<i64>>(POLICY_ID))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        {
            let known = self.known.lock().expect("policy snapshots");
            for id in wanted {
                match known.policies.get(&id) {
                    Some(policy) => {
                        found.insert(id, policy.clone());
                    }
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            let rows = client
                .cached_query(
                    "SELECT id, doc FROM policy_snapshots WHERE id = ANY($1)",
                    &[&missing],
                )
                .await
                .map_err(pg)?;
            let mut known = self.known.lock().expect("policy snapshots");
            for row in &rows {
                let id: i64 = row.get(0);
                let policy: Policy = json_col(row, 1)?;
                known.record(None, id, &policy);
                found.insert(id, policy);
            }
        }
        Ok(found)
    }
}
