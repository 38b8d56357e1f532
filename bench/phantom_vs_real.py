"""Calibration report of the phantoms against the real CT in ``shared/data``: figures and a side-by-side picture.

Usage::

    python bench/phantom_vs_real.py                       # shared data next to the repository
    python bench/phantom_vs_real.py --shared /path/to/shared --out docs/images/phantom_vs_real.png

Prints markdown tables (the "Calibration" section of ``docs/phantoms.md``): population statistics over 20 seeds,
organ HU of the non-contrast abdomen against the real unenhanced abdominal CT, noise amplitude and neighbour
correlation in the liver, lung-vessel density and blood-pool noise of the chest against the real chest CT
angiography; and writes a PNG with the real CT and the phantom side by side on the same grid (same shape and
spacing, so the same physical scale), axial and coronal, abdomen and chest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from ctsynth.data.labels import ABDOMEN_LABELS  # noqa: E402
from ctsynth.data.phantoms import make_abdomen_phantom, make_chest_phantom  # noqa: E402
from ctsynth.data.phantoms.calibration import lung_dense_fraction, lung_field, noise_grain  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Real masks (TotalSegmentator names) per phantom organ.
REAL_MASKS = {
    "liver": ["liver"],
    "spleen": ["spleen"],
    "kidney": ["kidney_left", "kidney_right"],
    "aorta": ["aorta"],
    "ivc": ["inferior_vena_cava"],
    "pancreas": ["pancreas"],
    "gallbladder": ["gallbladder"],
    "vertebra": ["vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4", "vertebrae_L5"],
}
#: Chest phantom grid centre: the seed's heart, as the real crop is cropped around the heart.
CHEST_CENTRE = "heart"


def load_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Image and affine reoriented to RAS (the phantoms' orientation).

    Raises:
        FileNotFoundError: naming the missing file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: real CT not found (pass --shared, the folder holding data/real-ct)")
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def population_table() -> list[str]:
    """Organ volumes, pancreas centroid spread and leave-one-out atlas Dice over 20 seeds (4 mm, whole abdomen)."""
    vols = [make_abdomen_phantom((96, 80, 96), 4.0, seed=s, tumor=False, noise_sd=0, centre="body") for s in range(20)]
    ml = 4.0**3 / 1000
    rows = ["| organ | mean (mL) | CV | min-max (mL) |", "|---|---|---|---|"]
    for k in ("liver", "spleen", "kidney", "pancreas"):
        v = np.array([(p.organs == ABDOMEN_LABELS[k]).sum() * ml for p in vols])
        rows.append(
            f"| {k}{' (both)' if k == 'kidney' else ''} | {v.mean():.0f} | {v.std() / v.mean():.2f} | "
            f"{v.min():.0f}-{v.max():.0f} |"
        )
    pans = [p.organs == ABDOMEN_LABELS["pancreas"] for p in vols]
    cents = np.array([ndimage.center_of_mass(m) for m in pans]) * 4.0
    spread = np.sqrt(((cents - cents.mean(0)) ** 2).sum(1).mean())
    stack = np.stack(pans).astype(np.int16)
    total = stack.sum(0)
    dice = []
    for i, m in enumerate(pans):
        atlas = (total - stack[i]) * 2 > len(pans) - 1
        dice.append(2 * (atlas & m).sum() / max(atlas.sum() + m.sum(), 1))
    rows.append("")
    rows.append(
        f"Pancreas centroid RMS spread {spread:.1f} mm; leave-one-out majority-vote atlas Dice on the pancreas "
        f"{np.mean(dice):.2f} (20 seeds)."
    )
    return rows


def abdomen_tables(shared: Path) -> tuple[list[str], np.ndarray, np.ndarray, object]:
    """Organ HU and liver noise, real unenhanced CT vs the non-contrast phantom on the same grid."""
    real_dir = shared / "data" / "real-ct"
    ct, aff = load_ras(real_dir / "ct.nii.gz")
    sp = tuple(float(s) for s in np.abs(np.diag(aff)[:3]))
    vol = make_abdomen_phantom(ct.shape, sp, seed=1, phase="non_contrast", tumor=False, centre="body")
    rows = ["| organ | real mean / SD (HU) | phantom mean / SD (HU) |", "|---|---|---|"]
    masks = {}
    for organ, files in REAL_MASKS.items():
        m = np.zeros(ct.shape, dtype=bool)
        for f in files:
            m |= np.asarray(nib.as_closest_canonical(nib.load(str(real_dir / "masks" / f"{f}.nii.gz"))).dataobj) > 0
        masks[organ] = m
        pm = vol.organs == ABDOMEN_LABELS[organ]
        if organ in ("aorta", "ivc"):
            pm = ndimage.binary_erosion(pm)
        rows.append(
            f"| {organ} | {ct[m].mean():.0f} / {ct[m].std():.0f} | "
            f"{vol.image[pm].mean():.0f} / {vol.image[pm].std():.0f} |"
        )
    r_sd, r_c = noise_grain(ct, masks["liver"])
    p_sd, p_c = noise_grain(vol.image, vol.organs == ABDOMEN_LABELS["liver"])
    rows += [
        "",
        "| liver, eroded 2 voxels | SD (HU) | neighbour correlation x / y / z |",
        "|---|---|---|",
        f"| real CT ({sp[0]:g} mm, unenhanced) | {r_sd:.1f} | {' / '.join(f'{c:.2f}' for c in r_c)} |",
        f"| phantom, seed 1, non-contrast | {p_sd:.1f} | {' / '.join(f'{c:.2f}' for c in p_c)} |",
    ]
    return rows, ct, masks["pancreas"], vol


def chest_tables(shared: Path) -> tuple[list[str], np.ndarray, object]:
    """Lung-vessel density, lung parenchyma HU and blood-pool noise, real CT angiography vs the phantom."""
    ct, aff = load_ras(shared / "data" / "real-ct-chest" / "ct.nii.gz")
    sp = tuple(float(s) for s in np.abs(np.diag(aff)[:3]))
    phantoms = [
        make_chest_phantom(ct.shape, sp, seed=s, nodules=0, phase="arterial", centre_mm=CHEST_CENTRE) for s in range(4)
    ]
    real_frac = lung_dense_fraction(ct, sp)
    fracs = np.array([lung_dense_fraction(p.image, sp) for p in phantoms])
    real_field = lung_field(ct, sp)
    ph_field = lung_field(phantoms[0].image, sp)
    real_par = ct[real_field & (ct < -500)].mean()
    ph_par = phantoms[0].image[ph_field & (phantoms[0].image < -500)].mean()

    def blood_pool(image: np.ndarray) -> np.ndarray:
        m = (image > 200) & (image < 600)
        lab, n = ndimage.label(m)
        return lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])) if n else m

    r_sd, r_c = noise_grain(ct, blood_pool(ct))
    p_sd, p_c = noise_grain(phantoms[0].image, blood_pool(phantoms[0].image))
    rows = [
        "| chest, 1.5 mm | lung voxels above -500 HU | lung parenchyma mean (HU) | blood-pool SD (HU) | "
        "blood-pool neighbour correlation x / y / z |",
        "|---|---|---|---|---|",
        f"| real CT angiography crop | {100 * real_frac:.1f} % | {real_par:.0f} | {r_sd:.1f} | "
        f"{' / '.join(f'{c:.2f}' for c in r_c)} |",
        f"| phantom, arterial, seeds 0-3 | {100 * fracs.mean():.1f} % (SD {100 * fracs.std():.1f}) | {ph_par:.0f} | "
        f"{p_sd:.1f} | {' / '.join(f'{c:.2f}' for c in p_c)} |",
    ]
    return rows, ct, phantoms[0]


def figure(abd_real: np.ndarray, pancreas: np.ndarray, abd_ph, chest_real: np.ndarray, chest_ph, out: Path) -> None:
    """Real and phantom side by side, axial and coronal, on identical grids (same millimetre extent)."""
    fig, axes = plt.subplots(2, 4, figsize=(12.0, 6.6))
    z_r = int(round(ndimage.center_of_mass(pancreas)[2]))
    z_p = int(round(ndimage.center_of_mass(abd_ph.organs == ABDOMEN_LABELS["pancreas"])[2]))
    y_r = int(round(ndimage.center_of_mass(pancreas)[1]))
    y_p = int(round(ndimage.center_of_mass(abd_ph.organs == ABDOMEN_LABELS["pancreas"])[1]))
    cz, cy = chest_real.shape[2] // 2, chest_real.shape[1] // 2
    panels = [
        (abd_real[:, :, z_r], 3.0, "abdomen real, axial", (-160, 240), "yx"),
        (abd_ph.image[:, :, z_p], 3.0, "abdomen phantom, axial", (-160, 240), "yx"),
        (abd_real[:, y_r, :], 3.0, "abdomen real, coronal", (-160, 240), "zx"),
        (abd_ph.image[:, y_p, :], 3.0, "abdomen phantom, coronal", (-160, 240), "zx"),
        (chest_real[:, :, cz], 1.5, "chest real (CTA), axial", (-1000, 400), "yx"),
        (chest_ph.image[:, :, cz], 1.5, "chest phantom (arterial), axial", (-1000, 400), "yx"),
        (chest_real[:, cy, :], 1.5, "chest real (CTA), coronal", (-1000, 400), "zx"),
        (chest_ph.image[:, cy, :], 1.5, "chest phantom (arterial), coronal", (-1000, 400), "zx"),
    ]
    for ax, (sl, sp, title, (lo, hi), _) in zip(axes.ravel(), panels, strict=True):
        # radiological display: patient's right on the left of the image, anterior (or superior) at the top
        img = sl[::-1].T
        ext = (-sl.shape[0] * sp / 2, sl.shape[0] * sp / 2, -sl.shape[1] * sp / 2, sl.shape[1] * sp / 2)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=ext, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("mm", fontsize=8)
    fig.suptitle(
        "Real CT (shared/data) and phantom on the same grid: same shape, spacing and millimetre axes", fontsize=10
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "phantom_vs_real.png")
    args = parser.parse_args()
    abd_rows, abd_real, pancreas, abd_ph = abdomen_tables(args.shared)
    chest_rows, chest_real, chest_ph = chest_tables(args.shared)
    print("\n".join(population_table()))
    print()
    print("\n".join(abd_rows))
    print()
    print("\n".join(chest_rows))
    figure(abd_real, pancreas, abd_ph, chest_real, chest_ph, args.out)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
