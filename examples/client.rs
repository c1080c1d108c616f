//! A minimal Rust client for `iamd serve`.
//!
//! Run the sidecar (`cargo run --release -- serve --store examples/store`), then
//! `cargo run --example client`. In your own crate, generate the client from
//! `proto/iamd/v1/authorizer.proto` with tonic-prost-build; here it comes from
//! iamd's library.

use iamd::server::pb::{
    authorizer_client::AuthorizerClient, AuthorizeRequest, ContextValues, Decision,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let mut client = AuthorizerClient::connect(addr).await?;
    let response = client
        .authorize(AuthorizeRequest {
            principal: "s3.amazonaws.com".into(),
            action: "lambda:InvokeFunction".into(),
            resource: "arn:aws:lambda:us-east-1:111122223333:function:HelloWorld".into(),
            context: [
                ("aws:SourceAccount", "111122223333"),
                ("aws:SourceArn", "arn:aws:s3:::ExampleBucket"),
            ]
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    ContextValues {
                        values: vec![v.to_owned()],
                    },
                )
            })
            .collect(),
            explain: false,
            ..Default::default()
        })
        .await?
        .into_inner();
    match response.decision() {
        Decision::Allow => println!("allowed (snapshot revision {})", response.revision),
        _ => println!("denied: {}", response.message),
    }
    Ok(())
}
