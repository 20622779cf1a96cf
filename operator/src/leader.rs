//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas can run
//! with one active. The holder renews the Lease every `renew` interval; a standby takes it
//! over once `renewTime + leaseDurationSeconds` has passed. Every write is a replace with the
//! resourceVersion that was read, so two candidates can never both win the same term.
//!
//! A leader that finds another replica holding the Lease steps down by ending its run (the
//! process exits and is restarted as a standby): two controllers must never act at once.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct Election {
    /// Lease name.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and how often a standby retries.
    pub renew: Duration,
}

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be read or written.
    #[error("lease {name}: {source}")]
    Kube {
        /// Lease name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

enum Attempt {
    Won,
    Held(String),
}

impl Election {
    fn lease_spec(
        &self,
        now: Timestamp,
        acquired: Option<MicroTime>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn try_acquire(&self, api: &Api<Lease>) -> Result<Attempt, kube::Error> {
        // A hung request must not hold the renewal loop past the next period.
        match tokio::time::timeout(self.renew * 2, self.try_acquire_once(api)).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(
                format!("lease request timed out after {:?}", self.renew * 2).into(),
            )),
        }
    }

    async fn try_acquire_once(&self, api: &Api<Lease>) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.lease_spec(now, None, 0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Won),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Held("?".into())),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| now.duration_since(t.0).unsigned_abs() > duration && now > t.0);
        let mine = holder == self.identity;
        if !(mine || holder.is_empty() || expired) {
            return Ok(Attempt::Held(holder));
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine { spec.acquire_time } else { None };
        lease.spec = Some(self.lease_spec(now, acquired, transitions));
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Won),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Held(holder)),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self, api: &Api<Lease>) {
        let mut last_holder = String::new();
        loop {
            match self.try_acquire(api).await {
                Ok(Attempt::Won) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(Attempt::Held(holder)) => {
                    if holder != last_holder {
                        info!(lease = %self.name, %holder, "standing by: another replica leads");
                        last_holder = holder;
                    }
                }
                Err(e) => warn!(lease = %self.name, error = %e, "could not acquire lease"),
            }
            tokio::time::sleep(self.renew).await;
        }
    }

    /// Renews the Lease every `renew` interval for as long as this replica holds it; returns
    /// when another replica is seen holding it (leadership is lost).
    ///
    /// A renewal that fails because the API server cannot be reached or refuses the write
    /// does not end leadership by itself: while the API server is down (a restart, an
    /// upgrade) no other replica can take the Lease either, and this one cannot act. When
    /// renewals work again, either the Lease is still ours and is renewed, or another replica
    /// took it meanwhile and this one steps down.
    pub async fn hold(&self, api: &Api<Lease>) {
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(self.renew).await;
            match self.try_acquire(api).await {
                Ok(Attempt::Won) => {
                    if let Some(since) = failing_since.take() {
                        info!(lease = %self.name, after = ?since.elapsed(), "renewed the lease again");
                    }
                }
                Ok(Attempt::Held(holder)) => {
                    warn!(lease = %self.name, %holder, "lost the lease to another replica");
                    return;
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    warn!(lease = %self.name, error = %e, failing_for = ?since.elapsed(), "could not renew lease");
                }
            }
        }
    }

    /// Gives the Lease up on a clean shutdown, so a standby takes over at once.
    pub async fn release(&self, api: &Api<Lease>) -> Result<(), Error> {
        let err = |source| Error::Kube {
            name: self.name.clone(),
            source,
        };
        let Some(mut lease) = api.get_opt(&self.name).await.map_err(err)? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        api.replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|source| Error::Kube {
                name: self.name.clone(),
                source,
            })?;
        info!(lease = %self.name, "released the lease");
        Ok(())
    }
}
