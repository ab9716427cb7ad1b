//! The task and info families kept deflated between gzip scrapes.
//!
//! A scrape of a large page used to render and compress every task series again, though a
//! region's series change only when one of its targets publishes a poll. Here the families of
//! each (product, region) are kept as deflated [`Piece`]s, one per family, while the region's
//! snapshots are the same `Arc`s; a scrape deflates only the self-metrics and the process
//! metrics. A poll deflates its region before it shows the new snapshot
//! ([`super::Metrics::promote`]); a region the kept pieces lack (a first scrape, a listing
//! refreshed) is deflated by the scrape that needs it. The pieces are about a twentieth of the
//! text (the exposition format is repetitive), so keeping them costs far less memory than
//! keeping the page.

use super::book::Inventory;
use super::gzip::{GzPage, Piece, compressor};
use super::render;
use super::series::Series;
use super::text::{Exemplar, Exposition, Format, Kind, Num, OpenMetrics, Text};
use crate::product::{PRODUCTS, Product};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// The kept pieces of one format.
#[derive(Debug, Default)]
pub(super) struct Kept {
    regions: Vec<KeptRegion>,
    infos: Vec<KeptInfo>,
}

/// The task families of one product in one region, from `snapshots`.
#[derive(Debug)]
pub(super) struct KeptRegion {
    snapshots: Vec<Arc<Series>>,
    families: Vec<KeptFamily>,
}

/// One family's HELP and TYPE, and its samples in the region.
#[derive(Debug)]
struct KeptFamily {
    name: Box<str>,
    header: Piece,
    samples: Piece,
}

/// The info family of one product, header included, from `inventories` (`None`: no rows).
#[derive(Debug)]
struct KeptInfo {
    inventories: Vec<Arc<Inventory>>,
    piece: Option<Piece>,
}

fn same<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

impl Kept {
    /// Adds the task families, then the info families, of `snapshots` and `inventories` to
    /// `page`, in the order [`render::render_tasks`] and [`render::render_instances`] write
    /// them: kept pieces where their snapshots are unchanged, the rest rendered and kept now.
    /// Pieces of regions or listings that are gone are dropped.
    pub(super) fn write(
        &mut self,
        page: &mut GzPage,
        format: Format,
        (snapshots, inventories): (&[Arc<Series>], &[Arc<Inventory>]),
        progress: bool,
    ) {
        let mut old = std::mem::take(&mut self.regions);
        for product in PRODUCTS {
            let mut regions: BTreeMap<&str, Vec<Arc<Series>>> = BTreeMap::new();
            for s in snapshots.iter().filter(|s| s.product == *product) {
                regions.entry(&s.region).or_default().push(s.clone());
            }
            let start = self.regions.len();
            for (region, group) in regions {
                let kept = match old.iter().position(|k| same(&k.snapshots, &group)) {
                    Some(i) => old.swap_remove(i),
                    None => KeptRegion::render(
                        page.compressor(),
                        format,
                        *product,
                        region,
                        group,
                        progress,
                    ),
                };
                self.regions.push(kept);
            }
            // Family by family, each region's samples in turn (one HELP and TYPE per family).
            for name in render::family_order(*product) {
                let mut started = false;
                for region in &self.regions[start..] {
                    if let Some(f) = region.families.iter().find(|f| *f.name == *name) {
                        if !started {
                            page.piece(&f.header);
                            started = true;
                        }
                        page.piece(&f.samples);
                    }
                }
            }
        }
        let mut old = std::mem::take(&mut self.infos);
        for product in PRODUCTS {
            let mine: Vec<Arc<Inventory>> = inventories
                .iter()
                .filter(|i| i.product == *product)
                .cloned()
                .collect();
            let kept = match old.iter().position(|k| same(&k.inventories, &mine)) {
                Some(i) => old.swap_remove(i),
                None => KeptInfo::render(page.compressor(), format, *product, mine),
            };
            if let Some(piece) = &kept.piece {
                page.piece(piece);
            }
            self.infos.push(kept);
        }
    }

    /// The snapshots of the kept region that holds `previous`, with `current` in its place:
    /// the region as it is after `current` was published. `None` when no such region is kept.
    pub(super) fn successor(
        &self,
        previous: &Arc<Series>,
        current: &Arc<Series>,
    ) -> Option<Vec<Arc<Series>>> {
        let kept = self
            .regions
            .iter()
            .find(|r| r.snapshots.iter().any(|s| Arc::ptr_eq(s, previous)))?;
        let group = kept.snapshots.iter().map(|s| {
            if Arc::ptr_eq(s, previous) {
                current.clone()
            } else {
                s.clone()
            }
        });
        Some(group.collect())
    }

    /// A region deflated from `snapshots` (of one product and region) in `format`.
    pub(super) fn deflate_region(
        format: Format,
        snapshots: Vec<Arc<Series>>,
        progress: bool,
    ) -> KeptRegion {
        let first = snapshots.first().expect("a region has a snapshot");
        let (product, region) = (first.product, first.region.clone());
        let mut z = compressor(super::GZIP_LEVEL);
        KeptRegion::render(&mut z, format, product, &region, snapshots, progress)
    }

    /// Keeps `region`, unless a scrape has kept the same snapshots meanwhile.
    pub(super) fn add(&mut self, region: KeptRegion) {
        if !self
            .regions
            .iter()
            .any(|r| same(&r.snapshots, &region.snapshots))
        {
            self.regions.push(region);
        }
    }

    /// Drops the regions that hold `previous`, a snapshot no longer shown.
    pub(super) fn forget(&mut self, previous: &Arc<Series>) {
        self.regions
            .retain(|r| !r.snapshots.iter().any(|s| Arc::ptr_eq(s, previous)));
    }

    /// Whether a gzip scrape has asked for this format (so publications deflate ahead).
    pub(super) fn is_used(&self) -> bool {
        !self.regions.is_empty()
    }

    /// Whether the task families of exactly `snapshots` are kept.
    #[cfg(test)]
    pub(super) fn holds(&self, snapshots: &[Arc<Series>]) -> bool {
        self.regions.iter().any(|r| same(&r.snapshots, snapshots))
    }

    /// Bytes kept, for tests and measurement.
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        let regions: usize = self
            .regions
            .iter()
            .flat_map(|r| &r.families)
            .map(|f| f.header.size() + f.samples.size())
            .sum();
        regions
            + self
                .infos
                .iter()
                .filter_map(|i| i.piece.as_ref())
                .map(Piece::size)
                .sum::<usize>()
    }
}

impl KeptRegion {
    fn render(
        z: &mut flate2::Compress,
        format: Format,
        product: &'static dyn Product,
        region: &str,
        snapshots: Vec<Arc<Series>>,
        progress: bool,
    ) -> KeptRegion {
        let group: Vec<&Series> = snapshots.iter().map(AsRef::as_ref).collect();
        let (text, marks) = in_format(format, &RegionPart(product, region, &group, progress));
        // Each family runs from its header to the next family's header.
        let ends = marks.iter().skip(1).map(|m| m.1).chain([text.len()]);
        let families = marks
            .iter()
            .zip(ends)
            .map(|((name, at, samples), end)| KeptFamily {
                name: name.clone(),
                header: Piece::deflate(z, &text[*at..*samples]),
                samples: Piece::deflate(z, &text[*samples..end]),
            })
            .collect();
        KeptRegion {
            snapshots,
            families,
        }
    }
}

impl KeptInfo {
    fn render(
        z: &mut flate2::Compress,
        format: Format,
        product: &'static dyn Product,
        inventories: Vec<Arc<Inventory>>,
    ) -> KeptInfo {
        let (text, _) = in_format(format, &InfoPart(product, &inventories));
        KeptInfo {
            piece: (!text.is_empty()).then(|| Piece::deflate(z, &text)),
            inventories,
        }
    }
}

/// Where each family starts in a rendering: its name, its header's and its samples' offsets.
type Marks = Vec<(Box<str>, usize, usize)>;

/// Something rendered into a part of a page, in either format.
trait Part {
    fn render<E: Exposition>(&self, out: &mut E) -> io::Result<()>;
}

/// The task families of a product in a region.
struct RegionPart<'a>(&'static dyn Product, &'a str, &'a [&'a Series], bool);

impl Part for RegionPart<'_> {
    fn render<E: Exposition>(&self, out: &mut E) -> io::Result<()> {
        render::render_region(out, self.0, self.1, self.2, self.3)
    }
}

/// The info family of a product.
struct InfoPart<'a>(&'static dyn Product, &'a [Arc<Inventory>]);

impl Part for InfoPart<'_> {
    fn render<E: Exposition>(&self, out: &mut E) -> io::Result<()> {
        render::render_instances_of(out, self.0, self.1)
    }
}

/// What `part` writes in `format`, and where its families start.
fn in_format(format: Format, part: &impl Part) -> (Vec<u8>, Marks) {
    fn run<E: Exposition>(inner: E, len: fn(&E) -> usize, part: &impl Part) -> (E, Marks) {
        let mut split = Split {
            inner,
            len,
            marks: Vec::new(),
        };
        part.render(&mut split).expect("writing to memory");
        (split.inner, split.marks)
    }
    match format {
        Format::Text => {
            let (out, marks) = run(Text::new(Vec::new()), |e| e.get_ref().len(), part);
            (out.into_inner(), marks)
        }
        Format::OpenMetrics => {
            let (out, marks) = run(OpenMetrics::new(Vec::new()), |e| e.get_ref().len(), part);
            (out.into_inner(), marks)
        }
    }
}

/// An exposition that notes where each family starts in what `inner` writes.
struct Split<E> {
    inner: E,
    len: fn(&E) -> usize,
    marks: Marks,
}

impl<E: Exposition> Exposition for Split<E> {
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> io::Result<()> {
        let at = (self.len)(&self.inner);
        self.inner.family(name, help, kind)?;
        self.marks.push((name.into(), at, (self.len)(&self.inner)));
        Ok(())
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) -> io::Result<()> {
        self.inner.sample(name, labels, value)
    }

    fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: Num,
        exemplar: Option<&Exemplar>,
    ) -> io::Result<()> {
        self.inner.sample_with(name, labels, value, exemplar)
    }

    fn wants_exemplars(&self) -> bool {
        self.inner.wants_exemplars()
    }

    fn raw(&mut self, text: &[u8]) -> io::Result<()> {
        self.inner.raw(text)
    }

    /// A part of a page does not end it.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}
