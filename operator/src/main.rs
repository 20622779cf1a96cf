//! The io360 operator binary: `crd` prints the CustomResourceDefinition, `run` runs the
//! controller (with leader election, `/metrics` and `/healthz`, JSON logs and graceful
//! shutdown on SIGTERM or Ctrl-C).

mod run;

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
    /// Run the controller against the cluster of the ambient config (in-cluster or KUBECONFIG).
    Run(run::RunArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", io360_operator::crd_yaml());
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run::run(args)),
    }
}
