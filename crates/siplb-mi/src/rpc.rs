//! JSON-RPC 2.0 framing: reading a request object out of a body and writing the reply, with
//! the error objects and texts OpenSIPS' `mi_http` gives. No I/O.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

/// A JSON-RPC error object, as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct RpcError {
    /// JSON-RPC code: `-326xx` for protocol faults, `404`/`500` for command outcomes, as in
    /// OpenSIPS.
    pub(crate) code: i64,
    /// Short text; clients match on it, so the reference's wording is kept verbatim.
    pub(crate) message: Cow<'static, str>,
    /// Detail, present for `-32602` (which parameter, and what was wrong with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<String>,
}

impl RpcError {
    pub(crate) const fn new(code: i64, message: &'static str) -> Self {
        Self {
            code,
            message: Cow::Borrowed(message),
            data: None,
        }
    }

    pub(crate) const fn parse_error() -> Self {
        Self::new(-32700, "Parse error")
    }

    pub(crate) const fn invalid_request() -> Self {
        Self::new(-32600, "Invalid Request")
    }

    pub(crate) const fn method_not_found() -> Self {
        Self::new(-32601, "Method not found")
    }

    pub(crate) fn invalid_params(data: impl Into<String>) -> Self {
        Self {
            data: Some(data.into()),
            ..Self::new(-32602, "Invalid params")
        }
    }

    pub(crate) fn too_few_or_too_many() -> Self {
        Self::invalid_params("Too few or too many parameters")
    }

    pub(crate) fn named_mismatch() -> Self {
        Self::invalid_params("Named parameters do not match")
    }

    pub(crate) fn bad_type(param: &str) -> Self {
        Self::invalid_params(format!("Bad type for parameter '{param}'"))
    }

    pub(crate) fn out_of_range(param: &str) -> Self {
        Self::invalid_params(format!("Value out of range for parameter '{param}'"))
    }

    pub(crate) const fn internal() -> Self {
        Self::new(-32603, "Internal error")
    }
}

/// How the params member was given; absent and `null` both mean none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Params<'a> {
    None,
    Positional(&'a [Value]),
    Named(&'a serde_json::Map<String, Value>),
}

/// A well-formed request object.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    /// `None` for a notification: no `id` member at all (`"id": null` is a call).
    pub(crate) id: Option<Value>,
    pub(crate) method: String,
    pub(crate) params: Value,
}

impl Request {
    pub(crate) fn params(&self) -> Result<Params<'_>, RpcError> {
        match &self.params {
            Value::Null => Ok(Params::None),
            Value::Array(items) => Ok(Params::Positional(items)),
            Value::Object(map) => Ok(Params::Named(map)),
            _ => Err(RpcError::invalid_request()),
        }
    }
}

/// A request that cannot be run, with the id to answer it under (null when unknown).
#[derive(Debug, PartialEq)]
pub(crate) struct Rejected {
    pub(crate) id: Value,
    pub(crate) error: RpcError,
}

/// Reads one request object. Batches are refused as OpenSIPS refuses them: `-32600` with a
/// null id. A request that is invalid is answered even without an id (JSON-RPC 2.0 section
/// 5: the id could not be determined, so it is null), never silently dropped.
pub(crate) fn parse_request(body: &[u8]) -> Result<Request, Box<Rejected>> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Box::new(Rejected {
            id: Value::Null,
            error: RpcError::parse_error(),
        })
    })?;
    let Value::Object(mut object) = value else {
        return Err(Box::new(Rejected {
            id: Value::Null,
            error: RpcError::invalid_request(),
        }));
    };
    let id = object.remove("id");
    let invalid = |id: &Option<Value>| {
        Box::new(Rejected {
            id: id.clone().unwrap_or(Value::Null),
            error: RpcError::invalid_request(),
        })
    };
    match &id {
        None | Some(Value::Null | Value::String(_) | Value::Number(_)) => {}
        // An id of another type cannot be echoed meaningfully.
        Some(_) => {
            return Err(Box::new(Rejected {
                id: Value::Null,
                error: RpcError::invalid_request(),
            }));
        }
    }
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(&id));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(invalid(&id));
    };
    let params = object.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Null | Value::Array(_) | Value::Object(_)) {
        return Err(invalid(&id));
    }
    Ok(Request { id, method, params })
}

/// The reply text for a call: `result` is JSON text already serialized, so that the key
/// order chosen by the method survives (a `serde_json::Map` would sort it).
pub(crate) fn reply(id: &Value, outcome: Result<String, RpcError>) -> String {
    let id = id_text(id);
    match outcome {
        Ok(result) => format!(r#"{{"jsonrpc":"2.0","result":{result},"id":{id}}}"#),
        Err(error) => error_reply(&id, &error),
    }
}

fn error_reply(id_text: &str, error: &RpcError) -> String {
    // Serializing a struct of strings and integers cannot fail; the fallback keeps the
    // envelope valid anyway.
    let error = serde_json::to_string(error)
        .unwrap_or_else(|_| r#"{"code":-32603,"message":"Internal error"}"#.to_owned());
    format!(r#"{{"jsonrpc":"2.0","error":{error},"id":{id_text}}}"#)
}

fn id_text(id: &Value) -> String {
    serde_json::to_string(id).unwrap_or_else(|_| "null".to_owned())
}

pub(crate) fn rejected_reply(rejected: &Rejected) -> String {
    error_reply(&id_text(&rejected.id), &rejected.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rejected(body: &str) -> Rejected {
        match parse_request(body.as_bytes()) {
            Ok(r) => panic!("accepted {body}: {r:?}"),
            Err(r) => *r,
        }
    }

    #[test]
    fn truncated_json_is_a_parse_error_with_null_id() {
        let r = rejected(r#"{"jsonrpc":"2.0","method":"#);
        assert_eq!(
            rejected_reply(&r),
            r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
        );
    }

    #[test]
    fn missing_jsonrpc_echoes_the_id() {
        let r = rejected(r#"{"method":"lb_status","params":[1],"id":7}"#);
        assert_eq!(
            rejected_reply(&r),
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":7}"#
        );
        let r = rejected(r#"{"jsonrpc":"1.0","method":"lb_list","id":"x"}"#);
        assert_eq!((r.id, r.error.code), (json!("x"), -32600));
    }

    #[test]
    fn batches_and_scalars_are_invalid_with_null_id() {
        for body in [
            r#"[{"jsonrpc":"2.0","method":"lb_status","params":[1],"id":1}]"#,
            "[]",
            "42",
            r#""lb_list""#,
        ] {
            let r = rejected(body);
            assert_eq!(
                rejected_reply(&r),
                r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
                "{body}"
            );
        }
    }

    #[test]
    fn bad_method_params_or_id_types_are_invalid() {
        assert_eq!(
            rejected(r#"{"jsonrpc":"2.0","method":5,"id":1}"#).id,
            json!(1)
        );
        assert_eq!(
            rejected(r#"{"jsonrpc":"2.0","id":1}"#).error,
            RpcError::invalid_request()
        );
        assert_eq!(
            rejected(r#"{"jsonrpc":"2.0","method":"lb_list","params":3,"id":1}"#).error,
            RpcError::invalid_request()
        );
        let r = rejected(r#"{"jsonrpc":"2.0","method":"lb_list","id":{"a":1}}"#);
        assert_eq!((r.id, r.error.code), (Value::Null, -32600));
    }

    #[test]
    fn notification_and_null_id_are_told_apart() {
        let n = parse_request(br#"{"jsonrpc":"2.0","method":"lb_list"}"#).unwrap();
        assert_eq!(n.id, None);
        let c = parse_request(br#"{"jsonrpc":"2.0","method":"lb_list","id":null}"#).unwrap();
        assert_eq!(c.id, Some(Value::Null));
        assert_eq!(c.params().unwrap(), Params::None);
    }

    #[test]
    fn replies_keep_result_text_and_echo_ids() {
        assert_eq!(
            reply(&json!("abc"), Ok(r#""OK""#.into())),
            r#"{"jsonrpc":"2.0","result":"OK","id":"abc"}"#
        );
        assert_eq!(
            reply(&json!(14), Err(RpcError::too_few_or_too_many())),
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":14}"#
        );
    }
}
