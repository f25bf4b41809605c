//! The ticket store behind `semi generate --init semi|semi+swap`: the one given with `--store`
//! (checked to come from this model), or the on-the-fly cache store for this model and probe
//! settings ([`semi_methods::cache_store_with`]), into which the layout's missing pairs are
//! collected first.

use anyhow::Result;
use semi_diffusion::pipeline::StableDiffusion;
use semi_layout::Layout;
use semi_tickets::names::parse_category_list;
use semi_tickets::Store;

use crate::common::CollectBar;
use crate::generate::GenerateArgs;

pub fn store_for(
    args: &GenerateArgs,
    sd: &StableDiffusion,
    model_fingerprint: &str,
    layout: &Layout,
) -> Result<Store> {
    if let Some(dir) = &args.tickets.store {
        let store = Store::open(dir)?;
        semi_methods::check_store_model(&store, model_fingerprint, &args.model)?;
        return Ok(store);
    }
    let opts = args
        .probe
        .options(layout.height as usize, layout.width as usize)?;
    let partners = match &args.tickets.partners {
        Some(list) => parse_category_list(list)?,
        None => Vec::new(),
    };
    let mut bar = CollectBar::new("probing");
    let result = semi_methods::cache_store_with(
        sd,
        model_fingerprint,
        &opts,
        &layout.categories(),
        &partners,
        args.tickets.n,
        &mut |p| bar.update(p),
        &mut |line| println!("{line}"),
    );
    bar.finish();
    result
}
