//! Two repairs to the FAT32 image fatfs 0.3 writes, so `fsck.fat` finds it
//! clean:
//!
//! - fatfs writes a long-name entry before each directory's `.` and `..`
//!   entries; FAT requires `.` and `..` in the first two slots. The stray
//!   long-name slots are removed and the directory's entries moved up.
//! - it points `..` of top-level directories at the root's cluster; FAT32
//!   wants cluster 0 there.
//! - the FSInfo free-cluster count is left "unknown"; it is set from the FAT.
//!
//! The image is small and built once, so it is fixed in memory.

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0f;
const ATTR_DIR: u8 = 0x10;

struct Geometry {
    cluster_size: usize,
    data_start: usize,
    fat_start: usize,
    clusters: u32,
    root: u32,
    fsinfo: usize,
}

fn le16(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn geometry(img: &[u8]) -> Result<Geometry, String> {
    if img.len() < 512 || img[510] != 0x55 || img[511] != 0xaa {
        return Err("no boot sector".into());
    }
    let bps = le16(img, 11);
    let spc = img[13] as usize;
    let reserved = le16(img, 14);
    let fats = img[16] as usize;
    let fat_size = le32(img, 36) as usize;
    let total = le32(img, 32) as usize;
    let data_start = (reserved + fats * fat_size) * bps;
    let clusters = ((total * bps - data_start) / (spc * bps)) as u32;
    Ok(Geometry {
        cluster_size: spc * bps,
        data_start,
        fat_start: reserved * bps,
        clusters,
        root: le32(img, 44),
        fsinfo: le16(img, 48) * bps,
    })
}

impl Geometry {
    fn cluster(&self, c: u32) -> std::ops::Range<usize> {
        let start = self.data_start + (c as usize - 2) * self.cluster_size;
        start..start + self.cluster_size
    }

    fn next(&self, img: &[u8], c: u32) -> u32 {
        le32(img, self.fat_start + 4 * c as usize) & 0x0fff_ffff
    }
}

/// Repairs `img` in place.
pub fn repair(img: &mut [u8]) -> Result<(), String> {
    let g = geometry(img)?;
    fix_dir(img, &g, g.root, None)?;
    let free = (2..g.clusters + 2).filter(|&c| g.next(img, c) == 0).count() as u32;
    if le32(img, g.fsinfo) == 0x4161_5252 {
        img[g.fsinfo + 488..g.fsinfo + 492].copy_from_slice(&free.to_le_bytes());
    }
    Ok(())
}

/// Fixes the directory at cluster `c` (whose parent is `parent`, `None` for
/// the root itself), then its subdirectories.
fn fix_dir(img: &mut [u8], g: &Geometry, c: u32, parent: Option<u32>) -> Result<(), String> {
    if g.next(img, c) < 0x0fff_fff8 {
        return Err(format!(
            "directory at cluster {c} spans clusters; not expected in the ESP"
        ));
    }
    let range = g.cluster(c);
    let slots = img[range.clone()].to_vec();
    let mut kept: Vec<&[u8]> = slots.chunks(ENTRY).take_while(|e| e[0] != 0).collect();
    if parent.is_some() {
        // Drop long-name entries that belong to "." or "..".
        let mut out = Vec::new();
        let mut i = 0;
        while i < kept.len() {
            let e = kept[i];
            let next_is_dot = kept
                .get(i + 1)
                .is_some_and(|n| n[0] == b'.' && n[11] & ATTR_DIR != 0);
            if e[11] == ATTR_LFN && e[0] != 0xe5 && next_is_dot {
                i += 1;
                continue;
            }
            out.push(e);
            i += 1;
        }
        kept = out;
    }
    let mut fixed = vec![0u8; g.cluster_size];
    for (i, e) in kept.iter().enumerate() {
        fixed[i * ENTRY..(i + 1) * ENTRY].copy_from_slice(e);
    }
    if parent == Some(g.root) && fixed[ENTRY..ENTRY + 2] == *b".." {
        for o in [20, 21, 26, 27] {
            fixed[ENTRY + o] = 0;
        }
    }
    img[range].copy_from_slice(&fixed);
    let subdirs: Vec<u32> = kept
        .iter()
        .filter(|e| e[11] != ATTR_LFN && e[11] & ATTR_DIR != 0 && e[0] != b'.' && e[0] != 0xe5)
        .map(|e| (u32::from(le16(e, 20) as u16) << 16) | le16(e, 26) as u32)
        .collect();
    for sub in subdirs {
        fix_dir(img, g, sub, Some(c))?;
    }
    Ok(())
}
