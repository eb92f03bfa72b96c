//! Matching a request's params against a method's recipes, and reading typed values out of
//! them, the way OpenSIPS' MI core does (including its error texts). No I/O.

use std::num::IntErrorKind;

use serde_json::Value;

use crate::rpc::{Params, RpcError};

/// One accepted parameter list of a method, by name in positional order.
pub(crate) type Recipe = &'static [&'static str];

/// Picks the recipe `params` fit and returns its index with the values in recipe order.
///
/// Positional params pick by count. Named params pick by count first, then by names (in
/// any order): a count that no recipe has is "Too few or too many parameters", a count
/// that fits but names that do not is "Named parameters do not match", as observed.
pub(crate) fn bind<'a>(
    recipes: &[Recipe],
    params: Params<'a>,
) -> Result<(usize, Vec<&'a Value>), RpcError> {
    match params {
        Params::None => recipes
            .iter()
            .position(|r| r.is_empty())
            .map(|i| (i, Vec::new()))
            .ok_or_else(RpcError::too_few_or_too_many),
        Params::Positional(items) => recipes
            .iter()
            .position(|r| r.len() == items.len())
            .map(|i| (i, items.iter().collect()))
            .ok_or_else(RpcError::too_few_or_too_many),
        Params::Named(map) => {
            let mut count_fits = false;
            for (i, recipe) in recipes.iter().enumerate() {
                if recipe.len() != map.len() {
                    continue;
                }
                count_fits = true;
                let values: Option<Vec<&Value>> =
                    recipe.iter().map(|name| map.get(*name)).collect();
                if let Some(values) = values {
                    return Ok((i, values));
                }
            }
            Err(if count_fits {
                RpcError::named_mismatch()
            } else {
                RpcError::too_few_or_too_many()
            })
        }
    }
}

/// An integer param. Clients send numbers as strings (`"3"`), so decimal strings count;
/// so do integral floats (`50.0`), which the reference's JSON parser stores as integers.
/// Values outside `i64` are out of range rather than of the wrong type.
pub(crate) fn int(name: &str, value: &Value) -> Result<i64, RpcError> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.is_u64() {
                Err(RpcError::out_of_range(name))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    Err(RpcError::bad_type(name))
                } else if f < i64::MIN as f64 || f >= i64::MAX as f64 {
                    Err(RpcError::out_of_range(name))
                } else {
                    Ok(f as i64)
                }
            }
        }
        Value::String(s) => s.parse::<i64>().map_err(|e| match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => RpcError::out_of_range(name),
            _ => RpcError::bad_type(name),
        }),
        _ => Err(RpcError::bad_type(name)),
    }
}

/// A string param. A bare number is taken as its decimal text: `opensips-cli -j` and
/// hand-written requests send `["3","vm",50]`-like mixes, and a name such as `123` is legal.
pub(crate) fn string(name: &str, value: &Value) -> Result<String, RpcError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(RpcError::bad_type(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STATUS: &[Recipe] = &[&["destination_id"], &["destination_id", "new_status"]];
    const LIST: &[Recipe] = &[&[]];

    fn named(v: &Value) -> Params<'_> {
        match v {
            Value::Object(m) => Params::Named(m),
            _ => panic!("not an object"),
        }
    }

    fn positional(v: &Value) -> Params<'_> {
        match v {
            Value::Array(a) => Params::Positional(a),
            _ => panic!("not an array"),
        }
    }

    #[test]
    fn no_params_and_empty_object_are_the_same() {
        assert_eq!(bind(LIST, Params::None).unwrap().0, 0);
        let empty = json!({});
        assert_eq!(bind(LIST, named(&empty)).unwrap().0, 0);
        assert_eq!(
            bind(STATUS, Params::None).unwrap_err(),
            RpcError::too_few_or_too_many()
        );
        assert_eq!(
            bind(STATUS, named(&empty)).unwrap_err(),
            RpcError::too_few_or_too_many()
        );
    }

    #[test]
    fn positional_picks_by_count() {
        let one = json!([2]);
        let two = json!([2, 0]);
        let three = json!([2, 0, 1]);
        assert_eq!(
            bind(STATUS, positional(&one)).unwrap(),
            (0, vec![&json!(2)])
        );
        assert_eq!(bind(STATUS, positional(&two)).unwrap().0, 1);
        assert_eq!(
            bind(STATUS, positional(&three)).unwrap_err(),
            RpcError::too_few_or_too_many()
        );
        assert_eq!(
            bind(LIST, positional(&one)).unwrap_err(),
            RpcError::too_few_or_too_many()
        );
    }

    #[test]
    fn named_picks_by_names_in_any_order() {
        let p = json!({"new_status": "0", "destination_id": "2"});
        let (recipe, values) = bind(STATUS, named(&p)).unwrap();
        assert_eq!(recipe, 1);
        assert_eq!(values, vec![&json!("2"), &json!("0")]);
        let wrong = json!({"id": 1});
        assert_eq!(
            bind(STATUS, named(&wrong)).unwrap_err(),
            RpcError::named_mismatch()
        );
        let too_many = json!({"a": 1, "b": 2, "c": 3});
        assert_eq!(
            bind(STATUS, named(&too_many)).unwrap_err(),
            RpcError::too_few_or_too_many()
        );
    }

    #[test]
    fn ints_from_numbers_and_strings() {
        assert_eq!(int("x", &json!(3)), Ok(3));
        assert_eq!(int("x", &json!("50")), Ok(50));
        assert_eq!(int("x", &json!("-5")), Ok(-5));
        assert_eq!(int("x", &json!(50.0)), Ok(50));
        for bad in [
            json!("abc"),
            json!(""),
            json!("1.5"),
            json!(2.5),
            json!(null),
        ] {
            assert_eq!(int("x", &bad), Err(RpcError::bad_type("x")), "{bad}");
        }
        for huge in [
            json!(u64::MAX),
            json!("99999999999999999999"),
            json!("-99999999999999999999"),
            json!(1e30),
        ] {
            assert_eq!(int("x", &huge), Err(RpcError::out_of_range("x")), "{huge}");
        }
        assert_eq!(
            int("destination_id", &json!("abc"))
                .unwrap_err()
                .data
                .as_deref(),
            Some("Bad type for parameter 'destination_id'")
        );
    }

    #[test]
    fn strings_from_strings_and_numbers() {
        assert_eq!(string("res_name", &json!("vm")).unwrap(), "vm");
        assert_eq!(string("res_name", &json!(123)).unwrap(), "123");
        assert_eq!(
            string("res_name", &json!([1])),
            Err(RpcError::bad_type("res_name"))
        );
    }
}
