//! The action-specific condition keys of a Lambda API call, as AWS puts them
//! in the request context: read from the JSON body or the query where the
//! call carries them, and marked *unknown* where only Lambda's own state
//! holds them (an event source mapping's function, a statement's principal).
//!
//! Every key the Service Authorization Reference lists for an action ends in
//! one of three states: a value, known absent (the body is complete and the
//! optional field is not in it), or unknown. A key is never silently left
//! out, so a Deny conditioned on it cannot be dodged by omitting it.

use serde_json::{Map, Value};

use super::{ArnDefaults, FunctionRef};
use crate::catalog::ActionInfo;

/// What the call itself says about the action's condition keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallKeys {
    /// Keys with values, in the order derived.
    pub context: Vec<(String, Vec<String>)>,
    /// Keys whose values only Lambda's state holds; `aws:RequestTag/` stands
    /// for every request tag.
    pub unknown: Vec<String>,
}

/// Does deciding `action` need the request body?
pub(super) fn reads_body(action: &str) -> bool {
    BODY_ACTIONS.iter().any(|a| a.eq_ignore_ascii_case(action))
}

/// Actions whose condition keys come from the JSON body.
const BODY_ACTIONS: &[&str] = &[
    "lambda:AddPermission",
    "lambda:CreateCapacityProvider",
    "lambda:CreateCodeSigningConfig",
    "lambda:CreateEventSourceMapping",
    "lambda:CreateFunction",
    "lambda:CreateFunctionUrlConfig",
    "lambda:CreateMicrovmImage",
    "lambda:CreateNetworkConnector",
    "lambda:PutFunctionCodeSigningConfig",
    "lambda:TagResource",
    "lambda:UpdateEventSourceMapping",
    "lambda:UpdateFunctionConfiguration",
    "lambda:UpdateFunctionUrlConfig",
];

/// The body's fields as the key rules read them; every type error names the field.
struct Body<'b>(Option<&'b Map<String, Value>>);

impl<'b> Body<'b> {
    fn get(&self, name: &str) -> Option<&'b Value> {
        self.0.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<Option<&'b str>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("the request body's `{name}` is not a string")),
        }
    }

    fn required_string(&self, name: &str) -> Result<&'b str, String> {
        self.string(name)?
            .ok_or_else(|| format!("the request body has no `{name}`"))
    }
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("the request body's `{field}` is not a list of strings"))
            })
            .collect(),
        _ => Err(format!(
            "the request body's `{field}` is not a list of strings"
        )),
    }
}

/// `Tags: {"k": "v"}` as `aws:RequestTag/k` and `aws:TagKeys`.
fn request_tags(body: &Body<'_>, out: &mut CallKeys) -> Result<(), String> {
    let Some(tags) = body.get("Tags") else {
        return Ok(());
    };
    let Value::Object(tags) = tags else {
        return Err("the request body's `Tags` is not an object of strings".into());
    };
    let mut names = Vec::with_capacity(tags.len());
    for (k, v) in tags {
        let v = v
            .as_str()
            .ok_or_else(|| format!("the request body's tag `{k}` is not a string"))?;
        out.context
            .push((format!("aws:RequestTag/{k}"), vec![v.to_owned()]));
        names.push(k.clone());
    }
    out.context.push(("aws:TagKeys".into(), names));
    Ok(())
}

/// `Layers` and `VpcConfig` of CreateFunction and UpdateFunctionConfiguration.
fn function_configuration(body: &Body<'_>, out: &mut CallKeys) -> Result<(), String> {
    if let Some(layers) = body.get("Layers") {
        out.context
            .push(("lambda:Layer".into(), strings(layers, "Layers")?));
    }
    if let Some(vpc) = body.get("VpcConfig") {
        let Value::Object(vpc) = vpc else {
            return Err("the request body's `VpcConfig` is not an object".into());
        };
        let vpc = Body(Some(vpc));
        let mut subnets = false;
        for (field, key) in [
            ("SubnetIds", "lambda:SubnetIds"),
            ("SecurityGroupIds", "lambda:SecurityGroupIds"),
        ] {
            if let Some(v) = vpc.get(field) {
                let values = strings(v, &format!("VpcConfig.{field}"))?;
                subnets |= field == "SubnetIds" && !values.is_empty();
                out.context.push((key.into(), values));
            }
        }
        // Lambda derives the VPC from the subnets; iamd cannot.
        if subnets {
            out.unknown.push("lambda:VpcIds".into());
        }
    }
    Ok(())
}

/// Derives the keys of `action` (`info`, its reference entry) from the
/// call. `body` is `None` when the action does not read it; `function_arn` is the unqualified ARN of a
/// function the path names; `tag_keys` are the query's `tagKeys`.
pub(super) fn derive(
    info: Option<&'static ActionInfo>,
    action: &str,
    body: Option<&Map<String, Value>>,
    function_arn: Option<&str>,
    tag_keys: &[String],
    defaults: &ArnDefaults,
) -> Result<CallKeys, String> {
    const TAGS: [&str; 2] = ["aws:RequestTag/", "aws:TagKeys"];
    let body = Body(body);
    let mut out = CallKeys::default();
    // Keys whose absence from a complete body means absent, as in AWS.
    let mut handled: Vec<&str> = Vec::new();
    let function_from_body =
        |name: &str| -> Result<String, String> { FunctionRef::parse(name)?.arn(defaults, None) };
    match info.map_or(action, |a| a.name) {
        "lambda:CreateEventSourceMapping" => {
            let f = function_from_body(body.required_string("FunctionName")?)?;
            out.context.push(("lambda:FunctionArn".into(), vec![f]));
            request_tags(&body, &mut out)?;
            handled.extend(TAGS);
        }
        "lambda:UpdateEventSourceMapping" => match body.string("FunctionName")? {
            Some(name) => out
                .context
                .push(("lambda:FunctionArn".into(), vec![function_from_body(name)?])),
            // The mapping keeps its function, which only Lambda knows.
            None => out.unknown.push("lambda:FunctionArn".into()),
        },
        "lambda:CreateFunction" | "lambda:UpdateFunctionConfiguration" => {
            function_configuration(&body, &mut out)?;
            if let Some(csc) = body.string("CodeSigningConfigArn")? {
                out.context
                    .push(("lambda:CodeSigningConfigArn".into(), vec![csc.to_owned()]));
            }
            request_tags(&body, &mut out)?;
            handled.extend([
                "lambda:Layer",
                "lambda:SubnetIds",
                "lambda:SecurityGroupIds",
                "lambda:VpcIds",
                "lambda:CodeSigningConfigArn",
            ]);
            handled.extend(TAGS);
        }
        "lambda:PutFunctionCodeSigningConfig" => {
            let csc = body.required_string("CodeSigningConfigArn")?;
            out.context
                .push(("lambda:CodeSigningConfigArn".into(), vec![csc.to_owned()]));
        }
        "lambda:TagResource" => {
            if body.get("Tags").is_none() {
                return Err("the request body has no `Tags`".into());
            }
            request_tags(&body, &mut out)?;
            handled.extend(TAGS);
        }
        "lambda:UntagResource" => {
            out.context.push(("aws:TagKeys".into(), tag_keys.to_vec()));
        }
        "lambda:AddPermission" => {
            let principal = body.required_string("Principal")?;
            out.context
                .push(("lambda:Principal".into(), vec![principal.to_owned()]));
            if let Some(t) = body.string("FunctionUrlAuthType")? {
                out.context
                    .push(("lambda:FunctionUrlAuthType".into(), vec![t.to_owned()]));
            }
            handled.push("lambda:FunctionUrlAuthType");
        }
        "lambda:CreateFunctionUrlConfig" => {
            let t = body.required_string("AuthType")?;
            out.context
                .push(("lambda:FunctionUrlAuthType".into(), vec![t.to_owned()]));
        }
        "lambda:UpdateFunctionUrlConfig" => {
            if let Some(t) = body.string("AuthType")? {
                out.context
                    .push(("lambda:FunctionUrlAuthType".into(), vec![t.to_owned()]));
            }
        }
        "lambda:CreateCapacityProvider"
        | "lambda:CreateCodeSigningConfig"
        | "lambda:CreateMicrovmImage"
        | "lambda:CreateNetworkConnector" => {
            request_tags(&body, &mut out)?;
            handled.extend(TAGS);
        }
        _ => {}
    }
    if let Some(f) = function_arn {
        if !out.context.iter().any(|(k, _)| k == "lambda:FunctionArn") {
            out.context
                .push(("lambda:FunctionArn".into(), vec![f.to_owned()]));
        }
    }
    // Whatever else the reference lists for the action only Lambda knows.
    for key in info
        .map(|a| a.condition_keys)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        let name = key.strip_suffix("${TagKey}").unwrap_or(key);
        let has_value = out.context.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case(name) || (name.ends_with('/') && k.starts_with(name))
        });
        let settled = has_value || handled.contains(&name) || out.unknown.iter().any(|u| u == name);
        if !settled {
            out.unknown.push(name.to_owned());
        }
    }
    Ok(out)
}
