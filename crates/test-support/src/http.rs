//! Requests whose transport must not fail: the test checks the answer, and a
//! connection error is a failure of the test.

use std::future::Future;

use covenant_client::{HttpResponse, LedgerClient};
use serde_json::Value;

/// `request(..).await.unwrap()`, the call every API test makes dozens of times,
/// named by what it sends.
pub trait Requests {
    /// `method path` with `body` (if any) as JSON.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> impl Future<Output = HttpResponse> + Send;

    /// `GET path`.
    fn get(&self, path: &str) -> impl Future<Output = HttpResponse> + Send {
        self.send("GET", path, None)
    }

    /// `POST path` with `body` as JSON.
    fn post(&self, path: &str, body: &Value) -> impl Future<Output = HttpResponse> + Send {
        self.send("POST", path, Some(body))
    }
}

impl Requests for LedgerClient {
    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
        self.request(method, path, body).await.unwrap()
    }
}
