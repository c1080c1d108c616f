//! The JSON documents a synthetic store is made of, as serde types: the
//! shapes of `aws iam get-account-authorization-details`, `aws lambda
//! get-policy` and an organization's SCPs, with only the fields the
//! generator writes, in the order AWS writes them.
//!
//! Write-only and private to [`super`]: iamd reads stores through its own
//! raw types in `store` and `policy`, never through these.

use std::borrow::Cow;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// A policy document; `Id` only on resource-based policies.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Policy {
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'static str>,
    statement: Vec<Statement>,
}

impl Policy {
    /// A resource-based policy, as `AddPermission` writes it (`"Id": "default"`).
    pub(super) fn resource_based(statement: Vec<Statement>) -> Policy {
        Policy {
            version: "2012-10-17",
            id: Some("default"),
            statement,
        }
    }

    /// An identity-based, trust or service control policy.
    pub(super) fn identity_based(statement: Vec<Statement>) -> Policy {
        Policy {
            version: "2012-10-17",
            id: None,
            statement,
        }
    }
}

/// One statement; absent elements are left out.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Statement {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sid: Option<Cow<'static, str>>,
    /// `Allow` or `Deny`.
    pub(super) effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) principal: Option<Principal>,
    pub(super) action: Values,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) resource: Option<Values>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) condition: Option<Condition>,
}

/// `{"Service": "..."}` or `{"AWS": "..."}`.
#[derive(Serialize)]
pub(super) enum Principal {
    Service(&'static str),
    #[serde(rename = "AWS")]
    Aws(String),
}

/// A string or a list of strings, as the policy grammar allows for
/// `Action`, `Resource` and condition values.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Values {
    One(String),
    Many(Vec<String>),
}

impl Values {
    pub(super) fn one(value: impl Into<String>) -> Values {
        Values::One(value.into())
    }

    pub(super) fn many<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Values {
        Values::Many(values.into_iter().map(Into::into).collect())
    }
}

/// A `Condition` block: operators to keys to values, in the order given.
pub(super) struct Condition(pub(super) Vec<(&'static str, Vec<(&'static str, Values)>)>);

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut operators = serializer.serialize_map(Some(self.0.len()))?;
        for (operator, keys) in &self.0 {
            operators.serialize_entry(operator, &Ordered(keys))?;
        }
        operators.end()
    }
}

/// A JSON object whose keys keep the order of the list.
struct Ordered<'a>(&'a [(&'static str, Values)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, values) in self.0 {
            map.serialize_entry(key, values)?;
        }
        map.end()
    }
}

/// A function's (or alias's) policy file, as `aws lambda get-policy` returns it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct FunctionPolicyFile {
    pub(super) policy: Policy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) revision_id: Option<String>,
    pub(super) resource_arn: String,
}

/// One account's `aws iam get-account-authorization-details`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AccountDetails {
    pub(super) account_id: String,
    pub(super) policies: Vec<ManagedPolicy>,
    pub(super) group_detail_list: Vec<Group>,
    pub(super) user_detail_list: Vec<User>,
    pub(super) role_detail_list: Vec<Role>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ManagedPolicy {
    pub(super) policy_name: &'static str,
    pub(super) arn: String,
    pub(super) default_version_id: &'static str,
    pub(super) policy_version_list: Vec<PolicyVersion>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PolicyVersion {
    pub(super) version_id: &'static str,
    pub(super) is_default_version: bool,
    pub(super) document: Policy,
}

/// A managed policy attached to a group, user or role.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Attached {
    pub(super) policy_name: &'static str,
    pub(super) policy_arn: String,
}

/// An inline policy of a group, user or role.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InlinePolicy {
    pub(super) policy_name: &'static str,
    pub(super) policy_document: Policy,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Group {
    pub(super) group_name: String,
    pub(super) arn: String,
    pub(super) attached_managed_policies: Vec<Attached>,
    pub(super) group_policy_list: Vec<InlinePolicy>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct User {
    pub(super) user_name: String,
    pub(super) user_id: String,
    pub(super) arn: String,
    pub(super) path: &'static str,
    pub(super) group_list: Vec<String>,
    pub(super) attached_managed_policies: Vec<Attached>,
    pub(super) user_policy_list: Vec<InlinePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) permissions_boundary: Option<Boundary>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Tag {
    pub(super) key: &'static str,
    pub(super) value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Boundary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) permissions_boundary_type: Option<&'static str>,
    pub(super) permissions_boundary_arn: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Role {
    pub(super) role_name: String,
    pub(super) role_id: String,
    pub(super) arn: String,
    pub(super) path: &'static str,
    pub(super) assume_role_policy_document: Policy,
    pub(super) attached_managed_policies: Vec<Attached>,
    pub(super) role_policy_list: Vec<InlinePolicy>,
}

/// The organization's service control policies and their targets.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Organization {
    pub(super) service_control_policies: Vec<Scp>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Scp {
    pub(super) name: &'static str,
    pub(super) content: Policy,
    pub(super) targets: Vec<String>,
}
