//! The `semi` command.

mod bench;
mod common;
mod eval_cmd;
mod generate;
mod init;
mod plot;
mod tickets_bench;
mod tickets_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "semi",
    version,
    about = "Layout-controlled text-to-image generation by semantic-driven initialization"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate one image from a prompt or a layout with Stable Diffusion (DDIM).
    Generate(generate::GenerateArgs),
    /// Time the SD-1.5-size UNet, probe pass, text encoder and VAE decoder on the CPU.
    Bench(bench::BenchArgs),
    /// Lottery-ticket stores: collect, merge, inspect, bench.
    Tickets(tickets_cmd::TicketsArgs),
    /// Initial latents for a layout from a ticket store (SemI).
    Init(init::InitArgs),
    /// Evaluation (paper Table 1): samples, toy layouts, generate, merge, report, run.
    Eval(eval_cmd::EvalArgs),
    /// A local web page (and JSON API) to draw a layout and watch it become an image.
    Serve(semi_server::ServeArgs),
}

/// One line on stderr: `error: ` and the anyhow chain joined with ": ".
fn report(err: &anyhow::Error) -> ! {
    eprintln!("error: {}", semi_jobs::one_line(err));
    std::process::exit(1)
}

fn main() {
    // A bug must still end as one `error:` line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        // `semi ... | head -1`: the reader went away, as for any Unix tool that is no error
        // (141 is what a shell reports for a process ended by SIGPIPE).
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error: {}{place}", msg.replace('\n', " "));
        std::process::exit(1);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                // clap's message spans several lines (details, tips, usage): keep everything
                // before the usage block, on one line.
                let text = e.render().to_string();
                let msg = text
                    .lines()
                    .take_while(|l| !l.starts_with("Usage:"))
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
                eprintln!("error: {msg} (see `semi --help`)");
                std::process::exit(1);
            }
        },
    };
    // Ctrl-C removes the temporary files of unfinished writes (the server has its own
    // shutdown, and its writes are all small).
    if !matches!(cli.command, Command::Serve(_)) {
        if let Err(e) = semi_jobs::remove_temps_on_interrupt() {
            report(&e);
        }
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Tickets(args) => tickets_cmd::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Eval(args) => eval_cmd::run(&args),
        Command::Serve(args) => semi_server::run_cli(&args),
    };
    if let Err(e) = result {
        report(&e);
    }
}
