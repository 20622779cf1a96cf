//! The io360 operator binary: `crd` prints the CustomResourceDefinition, `run` runs the
//! controller.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "io360-operator",
    version,
    about = "Kubernetes operator for io360"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CommentCluster CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", io360_operator::crd_yaml()),
    }
    Ok(())
}
