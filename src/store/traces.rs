//! The step records of each action a job ran, for `usher jobs trace`.

use serde_json::Value;

use super::{Backend, Store, StoreError};

/// One action of one attempt of a job, as its steps went.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTrace {
    pub attempt: i64,
    pub action: String,
    /// A JSON array of step records (already redacted).
    pub steps: Value,
    /// Why the action failed (redacted); `None` when it did not.
    pub error: Option<String>,
    pub at: String,
}

type TraceRow = (i64, String, String, Option<String>, String);

impl Store {
    /// Keeps the step records of an action a job ran.
    pub async fn record_job_trace(
        &self,
        job_id: i64,
        attempt: i64,
        action: &str,
        steps: &Value,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let steps = steps.to_string();
        on_backend!(self, |w, _r| {
            sqlx::query(
                "INSERT INTO job_traces (job_id, attempt, action, steps, error, at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(job_id)
            .bind(attempt)
            .bind(action)
            .bind(&steps)
            .bind(error)
            .bind(&now)
            .execute(w)
            .await?;
        });
        Ok(())
    }

    /// Every action a job ran, in order.
    pub async fn job_traces(&self, job_id: i64) -> Result<Vec<JobTrace>, StoreError> {
        let rows: Vec<TraceRow> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT attempt, action, steps, error, at FROM job_traces WHERE job_id = $1 ORDER BY id",
            )
            .bind(job_id)
            .fetch_all(r)
            .await?
        });
        rows.into_iter()
            .map(|(attempt, action, steps, error, at)| {
                Ok(JobTrace {
                    attempt,
                    action,
                    steps: serde_json::from_str(&steps)
                        .map_err(|e| StoreError::Corrupt(format!("job trace: {e}")))?,
                    error,
                    at,
                })
            })
            .collect()
    }
}
