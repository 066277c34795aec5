//! Tokens, managed policies, organizations and notification channels.

use super::*;

pub(crate) const TOKEN_COLUMNS: &str =
    "id, name, role, secret_hash, created_at, created_by, revoked_at, org, instance";

pub(crate) const ORG_COLUMNS: &str =
    "name, default_policy, max_running, created_at, created_by, retry_budget";

pub(crate) fn org_from_row(row: &Row) -> Result<Org> {
    Ok(Org {
        name: row.get(0),
        default_policy: row.get(1),
        max_running: row
            .get::<_, Option<i32>>(2)
            .map(u32::try_from)
            .transpose()
            .map_err(corrupt)?,
        created_at: row.get(3),
        created_by: row.get(4),
        retry_budget: row
            .get::<_, Option<i32>>(5)
            .map(u32::try_from)
            .transpose()
            .map_err(corrupt)?,
    })
}

pub(crate) fn token_from_row(row: &Row) -> Result<TokenRecord> {
    let role: String = row.get(2);
    Ok(TokenRecord {
        id: row.get(0),
        name: row.get(1),
        role: Role::parse(&role).ok_or_else(|| corrupt(format!("role {role}")))?,
        secret_hash: row.get(3),
        created_at: row.get(4),
        created_by: row.get(5),
        revoked_at: row.get(6),
        org: row.get(7),
        instance: row.get(8),
    })
}

#[async_trait]
impl AccessStore for PostgresStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let client = self.client().await?;
        client
            .cached_execute(
                &format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &token.id,
                    &token.name,
                    &token.role.as_str(),
                    &token.secret_hash,
                    &token.created_at,
                    &token.created_by,
                    &token.revoked_at,
                    &token.org,
                    &token.instance,
                ],
            )
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => {
                    Error::Conflict(format!("a token named '{}' already exists", token.name))
                }
                _ => pg(e),
            })?;
        Ok(())
    }

    async fn revoke_token(
        &self,
        org: &str,
        id_or_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>> {
        let client = self.client().await?;
        let row = client
            .cached_query_opt(
                &format!(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE org = $1 AND (id = $2 OR name = $2) RETURNING {TOKEN_COLUMNS}"
                ),
                &[&org, &id_or_name, &now],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let client = self.client().await?;
        let row = client
            .cached_query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn put_policy(&self, policy: &StoredPolicy) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.cached_execute(
                "INSERT INTO managed_policies (name, policy, active, updated_at, updated_by, org) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (org, name) DO UPDATE SET policy = $2, active = $3, updated_at = $4, updated_by = $5",
                &[
                    &policy.name,
                    &to_json(&policy.policy),
                    &policy.active,
                    &policy.updated_at,
                    &policy.updated_by,
                    &policy.org,
                ],
            )
            .await
            .map_err(pg)?;
        // Every node reads its policies again at once (delivered at commit).
        notify(&tx, POLICIES_CHANNEL, &policy.name).await?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT name, policy, active, updated_at, updated_by, org FROM managed_policies ORDER BY org, name",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(StoredPolicy {
                    name: r.get(0),
                    policy: json_col(r, 1)?,
                    active: r.get(2),
                    updated_at: r.get(3),
                    updated_by: r.get(4),
                    org: r.get(5),
                })
            })
            .collect()
    }

    async fn insert_org(&self, org: &Org) -> Result<()> {
        let client = self.client().await?;
        client
            .cached_execute(
                &format!(
                    "INSERT INTO organizations ({ORG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                &[
                    &org.name,
                    &org.default_policy,
                    &org.max_running.map(|n| n as i32),
                    &org.created_at,
                    &org.created_by,
                    &org.retry_budget.map(|n| n as i32),
                ],
            )
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => Error::Conflict(format!(
                    "an organization named '{}' already exists",
                    org.name
                )),
                _ => pg(e),
            })?;
        Ok(())
    }

    async fn update_org(&self, org: &Org) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = tx
            .cached_execute(
                "UPDATE organizations SET default_policy = $2, max_running = $3, retry_budget = $4 WHERE name = $1",
                &[
                    &org.name,
                    &org.default_policy,
                    &org.max_running.map(|n| n as i32),
                    &org.retry_budget.map(|n| n as i32),
                ],
            )
            .await
            .map_err(pg)?;
        // The default policy is part of every node's policy book.
        notify(&tx, POLICIES_CHANNEL, &org.name).await?;
        tx.commit().await.map_err(pg)?;
        Ok(changed == 1)
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY name"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(org_from_row).collect()
    }

    async fn put_channel(&self, c: &StoredChannel) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.cached_execute(
            "INSERT INTO channels (org, name, config, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org, name) DO UPDATE SET config = $3, updated_at = $4, updated_by = $5",
            &[&c.org, &c.name, &c.config, &c.updated_at, &c.updated_by],
        )
        .await
        .map_err(pg)?;
        // Channels are read with the policies: every node reads both again.
        notify(&tx, POLICIES_CHANNEL, &c.org).await?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn delete_channel(&self, org: &str, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = tx
            .cached_execute(
                "DELETE FROM channels WHERE org = $1 AND name = $2",
                &[&org, &name],
            )
            .await
            .map_err(pg)?;
        notify(&tx, POLICIES_CHANNEL, org).await?;
        tx.commit().await.map_err(pg)?;
        Ok(changed == 1)
    }

    async fn list_channels(&self) -> Result<Vec<StoredChannel>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT org, name, config, updated_at, updated_by FROM channels ORDER BY org, name",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| StoredChannel {
                org: r.get(0),
                name: r.get(1),
                config: r.get(2),
                updated_at: r.get(3),
                updated_by: r.get(4),
            })
            .collect())
    }
}
