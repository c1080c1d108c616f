//! Prints the Cedar translation of a generated store, one policy per IAM
//! statement: `cargo run --release --example cedar_policies -- 1000`.

fn main() {
    let size = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000);
    let fx = iamd_peers::Fixture::new(size).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    for t in &fx.cedar.policies {
        println!("// {}\n{}\n", t.id, t.text);
    }
}
