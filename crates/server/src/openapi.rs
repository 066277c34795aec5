//! The OpenAPI document's frame: title, security schemes, and the error responses every
//! operation can give (added to each operation, so that clients and schema-based testers
//! know every status the server may answer with).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, RefOr, ResponseBuilder,
    Schema, Type,
};

/// Statuses any operation may answer with, and when.
const ERRORS: &[(&str, &str)] = &[
    ("400", "Malformed request (syntax, unparsable parameter)"),
    ("401", "No token, or an unknown or revoked one"),
    (
        "403",
        "The token's role is too weak, a session change lacks its CSRF token, or the request is cross-site (Host, Origin)",
    ),
    (
        "404",
        "No such job, policy, schedule, token, organization or route (another organization's answer the same)",
    ),
    ("405", "Method not allowed on this path"),
    ("409", "The change is not allowed in the current state"),
    ("413", "Body over 1 MiB"),
    ("415", "Body is not JSON"),
    ("422", "A value is not allowed; `details.field` names it"),
    ("429", "Rate limit of the token exceeded; see Retry-After"),
    ("503", "The database is unavailable"),
];

pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("retryd")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Runs deployments and background jobs to completion. Authenticate with \
                     `Authorization: Bearer rtd_…` (roles viewer < operator < admin), or with the \
                     dashboard's session cookie plus `X-CSRF-Token` on changes. Every request acts \
                     in one organization: the token's, or for an instance token the one named by \
                     the `X-Retryd-Org` header; another organization's jobs, queues, policies, \
                     schedules and tokens answer 404.",
                ))
                .build(),
        )
        .build()
}

fn error_schema() -> Schema {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let detail = ObjectBuilder::new()
        .property("code", string())
        .property("message", string())
        .property(
            "details",
            ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::AnyValue),
        )
        .required("code")
        .required("message");
    Schema::Object(
        ObjectBuilder::new()
            .property("error", detail)
            .required("error")
            .build(),
    )
}

fn add_errors(operation: &mut Operation) {
    for (status, description) in ERRORS {
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(*description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                    "Error",
                                ))))
                                .build(),
                        )
                        .build(),
                )
            });
    }
}

/// Serde reads an internally tagged enum's tag (`"type": "command"`) before the variant's
/// struct sees the fields, so each variant struct must admit the tag property too, or no body
/// could satisfy both its `additionalProperties: false` and the tag.
pub fn admit_tags(doc: &mut serde_json::Value) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    else {
        return;
    };
    let mut tagged: Vec<(String, String)> = Vec::new();
    for schema in schemas.values() {
        for branch in schema["oneOf"].as_array().into_iter().flatten() {
            let parts = branch["allOf"].as_array();
            let reference = parts
                .and_then(|p| p.iter().find_map(|x| x["$ref"].as_str()))
                .and_then(|r| r.rsplit('/').next());
            let tag = parts.and_then(|p| {
                p.iter()
                    .find_map(|x| x["properties"].as_object())
                    .and_then(|props| props.keys().next().cloned())
            });
            if let (Some(reference), Some(tag)) = (reference, tag) {
                tagged.push((reference.to_owned(), tag));
            }
        }
    }
    for (name, tag) in tagged {
        if let Some(properties) = schemas
            .get_mut(&name)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.as_object_mut())
        {
            properties.insert(tag, serde_json::json!({ "type": "string" }));
        }
    }
}

pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("Error".to_owned(), RefOr::T(error_schema()));
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
            crate::auth::SESSION_COOKIE,
        ))),
    );
    doc.security = Some(vec![
        utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::new("session", Vec::<String>::new()),
    ]);
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_errors(operation);
        }
    }
}
