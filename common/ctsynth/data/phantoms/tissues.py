"""Tissue classes of the phantoms: label id, mean HU per contrast phase, and texture standard deviation.

A *tissue* is what gets painted; several tissues can share one label (kidney cortex and medulla are both
"kidney", cortical and cancellous bone are both "vertebra"). Every number is documented in ``docs/phantoms.md``
together with its source; the short source tags in the comments below are:

- ``[PV]``  typical portal-venous (contrast-enhanced, ~70 s) ranges listed in the project's issue: liver 100-120,
  pancreas 90-110, spleen 110-130, aorta 150-200, kidney cortex 150-200, fat -120..-80, muscle 40-60,
  lung -850..-700 HU. The phantom's default is the middle of each range.
- ``[NC]``  typical unenhanced values: liver about 50-70 HU (common teaching, not verified against one paper) and
  above the spleen: the liver-minus-spleen difference of biopsy-proven non-steatotic livers lies in 1-18 HU (Park et
  al., Radiology 2011;258:760-766, verified), hence liver about 10 HU above spleen; blood 40-45, kidney 30, muscle
  50, fat -100 (not verified); bone and air from the Hounsfield scale; pancreas 40 (below liver, above water; a
  choice).
- ``[REAL]`` the one real (unenhanced) CT in ``shared/data/real-ct`` (README): pancreas -10/28, liver 44/17,
  spleen 32/19, kidneys 11-15/26-34, aorta 41/34, IVC 40/16, vertebrae 194-234/137-179, lower lung -727..-755.
- ``[PDAC]`` tumour-to-pancreas contrast of hypo-attenuating PDAC: 40.5 +/- 23.0 HU in the portal-venous and
  60.2 +/- 24.6 HU in the pancreatic phase (PubMed 17961951, 49 hypo-attenuating tumours of 57, verified);
  30-60 HU lower per the project's issue. The phantom default is 45 HU below pancreas.
- ``[PP]`` pancreatic (late arterial, 40-70 s) phase: tumour-pancreas contrast 67 +/- 19 HU against 39 +/- 16 HU in
  the hepatic phase, with greater pancreatic and vascular enhancement (Lu et al., "Two-phase helical CT for
  pancreatic tumors", Radiology 1996;199:697-701, verified; the first version cited it as AJR 1996;167:1181, which
  was wrong). The absolute values (pancreas 110-130 HU, liver 70-80 HU, arteries 250-300 HU, portal vein about
  150 HU) are typical figures, not verified; the "Tamm et al., AJR 2012" citation of the first version is not
  verified and was removed.
- ``[GGN]`` ground-glass nodules: hazy increased attenuation through which vessels stay visible. Lee et al., PLoS
  One 2018;13:e0205490 (verified) separate the solid component of ground-glass nodules at -400 or -160 HU, and in
  the study at PubMed Central PMC3388248 (Fig. 4, verified; its title was not retrieved) every lesion of 1 cm or
  less with a mean of -600 HU or less was a pure ground-glass nodule; the phantom's -600 HU is a choice consistent
  with both.
- ``[CHOICE]`` a value picked for a plausible look where no reference fixes it (documented as a choice).

Texture SDs (organ heterogeneity, added on top of scanner noise) are ``[CHOICE]`` values tuned so that the total
SD inside each organ (texture + noise + partial volume at the edges) is in the range of ``[REAL]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctsynth.data.labels import ABDOMEN_LABELS as A
from ctsynth.data.labels import CHEST_LABELS as C

#: Contrast phases. "pancreatic" is the late arterial phase of pancreatic CT; "arterial" is the same table used for a
#: CT angiography (bright arteries, as the real chest crop in shared/data/real-ct-chest).
PHASES = ("portal_venous", "non_contrast", "pancreatic", "arterial")


@dataclass(frozen=True)
class Tissue:
    """One paintable tissue.

    Args:
        name: tissue name.
        label: organ label id (ABDOMEN_LABELS / CHEST_LABELS).
        pv: mean HU in the portal-venous phase.
        nc: mean HU without contrast.
        sd: texture standard deviation in HU (spatially correlated organ heterogeneity).
        pp: mean HU in the pancreatic (late arterial) and arterial phases; None means the portal-venous value.
    """

    name: str
    label: int
    pv: float
    nc: float
    sd: float
    pp: float | None = None

    def mean(self, phase: str) -> float:
        """Mean HU for ``phase`` ("portal_venous", "non_contrast", "pancreatic" or "arterial")."""
        if phase == "non_contrast":
            return self.nc
        if phase in ("pancreatic", "arterial") and self.pp is not None:
            return self.pp
        return self.pv


# Abdomen. The order is the tissue id (index into this tuple); 0 is air outside the body.
ABDOMEN_TISSUES: tuple[Tissue, ...] = (
    Tissue("air", A["background"], -1000.0, -1000.0, 0.0),  # Hounsfield scale definition
    Tissue("subcutaneous_fat", A["subcutaneous_fat"], -100.0, -100.0, 4.0),  # [PV] -120..-80, [NC] -100
    Tissue("visceral_fat", A["visceral_fat"], -95.0, -100.0, 6.0),  # [PV] as fat; mesentery has small vessels
    Tissue("skin", A["subcutaneous_fat"], 40.0, 40.0, 4.0),  # [CHOICE] thin dermis, labelled with the body wall fat
    Tissue("muscle", A["muscle"], 55.0, 50.0, 5.0),  # [PV] 40-60, [NC] 50
    Tissue("liver", A["liver"], 110.0, 52.0, 7.5, pp=78.0),  # [PV] 100-120, [NC] 50-70 ([REAL] 44), [PP]
    Tissue("liver_vessel", A["liver"], 160.0, 40.0, 4.0, pp=120.0),  # [CHOICE] portal/hepatic veins; [NC] blood
    Tissue("spleen", A["spleen"], 120.0, 42.0, 7.5, pp=125.0),  # [PV] 110-130, [NC] liver - 10
    Tissue("kidney_cortex", A["kidney"], 175.0, 32.0, 7.0, pp=190.0),  # [PV] 150-200, [NC] 30, [PP] corticomedullary
    Tissue("kidney_medulla", A["kidney"], 140.0, 30.0, 7.0, pp=95.0),  # [CHOICE] medulla lags the cortex
    Tissue("renal_sinus_fat", A["visceral_fat"], -90.0, -90.0, 8.0),  # [CHOICE] fat with small vessels
    Tissue("stomach_wall", A["stomach_bowel"], 90.0, 40.0, 6.0, pp=100.0),  # [CHOICE] enhancing mucosa/wall
    Tissue("bowel_content", A["stomach_bowel"], 15.0, 15.0, 8.0),  # [CHOICE] water-like fluid / neutral contrast
    Tissue("bowel_gas", A["bowel_gas"], -950.0, -950.0, 20.0),  # [CHOICE] air with partial volume
    Tissue("aorta", A["aorta"], 170.0, 42.0, 4.0, pp=280.0),  # [PV] 150-200, [NC] blood 40-45, [PP] 250-300
    Tissue("ivc", A["ivc"], 140.0, 42.0, 6.0, pp=90.0),  # [CHOICE] PV mixes unenhanced blood; [NC] blood
    Tissue("pancreas", A["pancreas"], 100.0, 40.0, 6.0, pp=125.0),  # [PV] 90-110, [NC] 40, [PP] 110-130
    Tissue("tumor", A["tumor"], 55.0, 28.0, 10.0, pp=62.0),  # [PDAC] pancreas - 45 HU in PV; [PP] pancreas - 63
    Tissue("tumor_necrosis", A["tumor"], 30.0, 20.0, 8.0, pp=30.0),  # [CHOICE] hypo-enhancing core
    Tissue("cancellous_bone", A["vertebra"], 190.0, 190.0, 30.0),  # [REAL] vertebrae 194-234 incl. cortex
    Tissue("cortical_bone", A["vertebra"], 700.0, 700.0, 60.0),  # [CHOICE] thin cortical shell (PV-blurred)
    Tissue("disc", A["vertebra"], 85.0, 85.0, 8.0),  # [CHOICE] intervertebral disc, labelled with the column
    Tissue("spinal_canal", A["vertebra"], 20.0, 20.0, 6.0),  # [CHOICE] CSF/cord, labelled with the column
    Tissue("pancreas_fat", A["pancreas"], -80.0, -85.0, 8.0),  # [CHOICE] interlobular fat inside the gland outline
    Tissue("pancreatic_duct", A["pancreas"], 12.0, 10.0, 4.0),  # [CHOICE] pancreatic juice, water-like
    Tissue("gallbladder", A["gallbladder"], 8.0, 5.0, 4.0),  # [REAL] gallbladder 2 HU; bile 0-20
    Tissue("adrenal", A["adrenal"], 60.0, 25.0, 6.0, pp=70.0),  # [CHOICE] adrenal limbs, unenhanced < 10-30
    Tissue("portal_vein", A["portal_vein"], 170.0, 42.0, 4.0, pp=150.0),  # [PV] as aorta, [PP] 150, [NC] blood
    Tissue("rib_cortex", A["rib"], 650.0, 650.0, 60.0),  # [CHOICE] cortical bone, thin
    Tissue("rib_marrow", A["rib"], 200.0, 200.0, 30.0),  # [CHOICE] as cancellous bone
    Tissue("lung", A["lung"], -830.0, -830.0, 25.0),  # [REAL] lower lung lobes -727..-755 incl. vessels
    Tissue("heart", A["heart"], 140.0, 42.0, 8.0, pp=200.0),  # [CHOICE] chambers + myocardium
    Tissue("table_shell", A["table"], 200.0, 200.0, 10.0),  # [CHOICE] carbon-fibre shell of the patient table
    Tissue("table_core", A["table"], -900.0, -900.0, 10.0),  # [CHOICE] foam core
)

# Chest (default: unenhanced low-dose chest CT, as in lung screening). Order is the tissue id.
CHEST_TISSUES: tuple[Tissue, ...] = (
    Tissue("air", C["background"], -1000.0, -1000.0, 0.0),
    Tissue("fat", C["fat"], -100.0, -100.0, 8.0),  # [PV]/[NC] fat
    Tissue("skin", C["fat"], 40.0, 40.0, 6.0),  # [CHOICE]
    Tissue("muscle", C["muscle"], 55.0, 50.0, 8.0),  # [PV] 40-60, [NC] 50
    Tissue("mediastinum", C["mediastinum"], -60.0, -60.0, 25.0),  # [CHOICE] fat with vessels and nodes
    Tissue("great_vessel", C["mediastinum"], 170.0, 42.0, 6.0, pp=300.0),  # [PV] aorta / [NC] blood / [PP]
    Tissue("heart", C["heart"], 110.0, 45.0, 8.0, pp=130.0),  # [CHOICE] myocardium: enhancing muscle / [NC] muscle
    Tissue("lung", C["lung"], -830.0, -830.0, 25.0),  # [PV] lung -850..-700 (parenchyma without vessels)
    Tissue("lung_vessel", C["vessel"], 120.0, 40.0, 10.0, pp=280.0),  # [CHOICE] pulmonary vessels / [NC] blood / [PP]
    Tissue("airway_wall", C["airway"], 0.0, 0.0, 15.0),  # [CHOICE] cartilage+mucosa, partial volume with air
    Tissue("airway_lumen", C["airway"], -1000.0, -1000.0, 5.0),  # air
    Tissue("rib_cortex", C["rib"], 650.0, 650.0, 60.0),  # [CHOICE] cortical bone, thin
    Tissue("rib_marrow", C["rib"], 200.0, 200.0, 40.0),  # [CHOICE] as cancellous bone
    Tissue("cancellous_bone", C["spine"], 190.0, 190.0, 40.0),  # [REAL] as the abdominal vertebrae
    Tissue("cortical_bone", C["spine"], 700.0, 700.0, 60.0),  # [CHOICE]
    Tissue("disc", C["spine"], 85.0, 85.0, 8.0),  # [CHOICE]
    Tissue("spinal_canal", C["spine"], 20.0, 20.0, 6.0),  # [CHOICE]
    Tissue("subdiaphragm", C["muscle"], 105.0, 55.0, 10.0),  # [CHOICE] liver/spleen domes; no chest label, so muscle
    Tissue("nodule", C["nodule"], 35.0, 35.0, 12.0),  # [CHOICE] solid nodule, soft tissue (unenhanced 20-50)
    Tissue("nodule_ggo", C["nodule"], -600.0, -600.0, 40.0),  # [GGN] ground-glass component
    Tissue("heart_chamber", C["heart"], 170.0, 40.0, 6.0, pp=300.0),  # [PV] blood pool as aorta, [NC] blood
)


def tissue_ids(tissues: tuple[Tissue, ...]) -> dict[str, int]:
    """Map tissue name -> tissue id (its index)."""
    return {t.name: i for i, t in enumerate(tissues)}
