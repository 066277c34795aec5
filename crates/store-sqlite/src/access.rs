//! Tokens, managed policies, organizations and notification channels.

use super::*;

pub(crate) fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let role: String = row.get(2)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: Role::parse(&role).ok_or_else(|| corrupt(2, format!("role {role}")))?,
        secret_hash: row.get(3)?,
        created_at: from_ms(row.get(4)?),
        created_by: row.get(5)?,
        revoked_at: row.get::<_, Option<i64>>(6)?.map(from_ms),
        org: row.get(7)?,
        instance: row.get(8)?,
    })
}

pub(crate) const TOKEN_COLUMNS: &str =
    "id, name, role, secret_hash, created_at, created_by, revoked_at, org, instance";

pub(crate) fn org_from_row(row: &Row<'_>) -> rusqlite::Result<Org> {
    Ok(Org {
        name: row.get(0)?,
        default_policy: row.get(1)?,
        max_running: row.get(2)?,
        created_at: from_ms(row.get(3)?),
        created_by: row.get(4)?,
        retry_budget: row.get(5)?,
    })
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let token = token.clone();
        self.write(move |tx| {
            exec(
                tx,
                &format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    token.id,
                    token.name,
                    token.role.as_str(),
                    token.secret_hash,
                    ms(token.created_at),
                    token.created_by,
                    opt_ms(token.revoked_at),
                    token.org,
                    token.instance
                ],
            )
            .map_err(|e| unique_violation(e, &format!("a token named '{}'", token.name)))?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(
        &self,
        org: &str,
        id_or_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>> {
        let (org, key) = (org.to_owned(), id_or_name.to_owned());
        self.write(move |tx| {
            exec(tx,
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?3) WHERE org = ?1 AND (id = ?2 OR name = ?2)",
                params![org, key, ms(now)],
            )
            .map_err(to_store)?;
            tx.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE org = ?1 AND (id = ?2 OR name = ?2)"),
                [&org, &key],
                token_from_row,
            )
            .optional()
            .map_err(to_store)
        })
        .await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([id], token_from_row).optional())
            .map_err(to_store)
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
                ))
                .map_err(to_store)?;
            let rows = stmt.query_map([], token_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn put_policy(&self, policy: &StoredPolicy) -> Result<()> {
        let policy = policy.clone();
        self.write(move |tx| {
            exec(tx,
                "INSERT INTO managed_policies (name, policy, active, updated_at, updated_by, org) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (org, name) DO UPDATE SET policy = ?2, active = ?3, updated_at = ?4, updated_by = ?5",
                params![policy.name, json(&policy.policy), policy.active, ms(policy.updated_at), policy.updated_by, policy.org],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, policy, active, updated_at, updated_by, org FROM managed_policies ORDER BY org, name")
                .map_err(to_store)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(StoredPolicy {
                        name: r.get(0)?,
                        policy: json_col(r, 1)?,
                        active: r.get(2)?,
                        updated_at: from_ms(r.get(3)?),
                        updated_by: r.get(4)?,
                        org: r.get(5)?,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn insert_org(&self, org: &Org) -> Result<()> {
        let org = org.clone();
        self.write(move |tx| {
            exec(
                tx,
                "INSERT INTO organizations (name, default_policy, max_running, created_at, created_by, retry_budget) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![org.name, org.default_policy, org.max_running, ms(org.created_at), org.created_by, org.retry_budget],
            )
            .map_err(|e| unique_violation(e, &format!("an organization named '{}'", org.name)))?;
            Ok(())
        })
        .await
    }

    async fn update_org(&self, org: &Org) -> Result<bool> {
        let org = org.clone();
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE organizations SET default_policy = ?2, max_running = ?3, retry_budget = ?4 WHERE name = ?1",
                params![org.name, org.default_policy, org.max_running, org.retry_budget],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, default_policy, max_running, created_at, created_by, retry_budget FROM organizations ORDER BY name")
                .map_err(to_store)?;
            let rows = stmt.query_map([], org_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn put_channel(&self, channel: &StoredChannel) -> Result<()> {
        let c = channel.clone();
        self.write(move |tx| {
            exec(tx,
                "INSERT INTO channels (org, name, config, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (org, name) DO UPDATE SET config = ?3, updated_at = ?4, updated_by = ?5",
                params![c.org, c.name, json(&c.config), ms(c.updated_at), c.updated_by],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }

    async fn delete_channel(&self, org: &str, name: &str) -> Result<bool> {
        let (org, name) = (org.to_owned(), name.to_owned());
        self.write(move |tx| {
            exec(
                tx,
                "DELETE FROM channels WHERE org = ?1 AND name = ?2",
                [org, name],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }

    async fn list_channels(&self) -> Result<Vec<StoredChannel>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT org, name, config, updated_at, updated_by FROM channels ORDER BY org, name")
                .map_err(to_store)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(StoredChannel {
                        org: r.get(0)?,
                        name: r.get(1)?,
                        config: json_col(r, 2)?,
                        updated_at: from_ms(r.get(3)?),
                        updated_by: r.get(4)?,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }
}
