"""Draw one adult patient of the phantom population: sex, age, body size, habitus and organ volumes.

Every seed is a different adult. The distributions and their sources (checked against the published abstracts;
what could not be confirmed is marked "not verified", and the spreads and modifiers without a source are choices):

- height by sex: about 176 cm (men) and 163 cm (women), SD 7 cm. Source: NCD Risk Factor Collaboration, "A century
  of trends in adult human height", eLife 2016;5:e13410 (verified: title, journal, country-level mean heights by
  birth cohort); the two means are read as typical of European adults born 1950-1990 (figures not verified).
- body-mass index: 26.5 +- 4.5 kg/m^2, clipped to 18-42. Source: NCD-RisC, "Trends in adult body-mass index in 200
  countries from 1975 to 2014", Lancet 2016;387:1377-1396 (verified: global age-standardised mean 24.2 kg/m^2 in
  men and 24.4 in women in 2014); 26.5 for high-income western countries is not verified.
- body-surface area: Mosteller, "Simplified calculation of body-surface area", N Engl J Med 1987;317:1098
  (verified: title, journal, year).
- liver volume: ``1072.8 * BSA - 345.7`` mL, the standard-liver-volume formula of Heinemann et al., "Standard liver
  volume in the Caucasian population", Liver Transpl Surg 1999;5:366-368 (verified: formula, 1332 autopsy livers),
  times a lognormal individual factor of SD 0.3 in log units (a choice: with it the first 20 seeds meet both a
  volume CV >= 20 % and >= 75 % of livers inside 1200-2100 mL) and a decline after 60 (a choice).
- spleen volume: lognormal around 215 mL, SD 0.3 in log units. Source: Prassopoulos et al., "Determination of
  normal splenic volume on computed tomography in relation to age, gender and body habitus", Eur Radiol
  1997;7:246-248 (verified: mean 214.6 mL, range 107.2-314.5 mL in 140 patients; that study found no significant
  dependence on age, sex, height, weight or BMI, so the small sex, height and age modifiers here are choices).
- kidney volume: lognormal around 160 mL each, SD 0.18 in log units, left about 5 % larger than right, men about 10 %
  larger. Source: Cheong, Muthupillai, Flamm, MRI renal volumes of 130 adults without kidney disease (verified as
  their ISMRM 2006 abstract 2224, "Quantification of renal volume and length in normal subjects by MRI"; the
  journal version, Clin J Am Soc Nephrol 2007;2:38-45, and the 160 mL figure are not verified).
- pancreas volume: lognormal around 75 mL, SD 0.28 in log units, shrinking by 0.8 % a year after 60, with
  interlobular fat rising with age. Source: Saisho et al., "Pancreas volumes in humans from birth to age one
  hundred taking into account sex, obesity, and presence of type-2 diabetes", Clin Anat 2007;20:933-942
  (verified: plateau of 72.4 +- 25.8 mL from age 20 to 60, decline thereafter, pancreatic fat rising with age and
  obesity). The published spread (CV 0.36) is wider than the phantom's; the decline rate is a choice.
- aortic diameter (suprarenal, outer): about 22 mm in women and 24 mm in men, SD 2 mm, about +1 mm per decade after
  40 (choices). Checked sources: Johnston et al., "Suggested standards for reporting on arterial aneurysms",
  J Vasc Surg 1991;13:444-450 (verified: a table of representative normal adult arterial diameters; its values not
  verified here); Paivansalo et al., Atherosclerosis 2000;153:99-106 (verified: ultrasound abdominal aorta
  21.3 +- 2.8 mm in men and 17.8 +- 1.3 mm in women aged 40-60, larger with age and body size). Pedersen et al.,
  Eur J Vasc Surg 1993, cited in the first version, is not verified.
- fat: subcutaneous and visceral fat thicknesses follow the body-mass index with independent spread, men storing
  relatively more visceral and women more subcutaneous fat (choices; Kvist et al., Am J Clin Nutr 1988;48:1351-1361,
  cited in the first version, is not verified).

Organ volumes are the *targets* the anatomy is scaled to; what a phantom finally holds differs by partial volume and
by the few voxels other organs overwrite where they touch (measured in ``docs/phantoms.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SEXES = ("female", "male")
#: Allowed age range of the population (years).
AGE_RANGE = (20.0, 90.0)


@dataclass(frozen=True)
class Patient:
    """One drawn adult.

    Args:
        sex: "female" or "male".
        age: years.
        height_cm: body height.
        bmi: body-mass index (kg/m^2).
        bsa_m2: body-surface area (Mosteller).
        subcutaneous_fat_mm: anterior subcutaneous fat thickness at the level of the pancreas.
        visceral_fat: relative amount of visceral fat (0 lean, about 1 average, up to about 2.5), widens the cavity.
        liver_ml: target liver volume.
        spleen_ml: target spleen volume.
        kidney_ml: target volumes (right, left).
        pancreas_ml: target pancreas volume.
        pancreas_fat: fraction of the pancreas outline given to interlobular fat (0-0.3), rises with age.
        aorta_mm: suprarenal aortic diameter.
    """

    sex: str
    age: float
    height_cm: float
    bmi: float
    bsa_m2: float
    subcutaneous_fat_mm: float
    visceral_fat: float
    liver_ml: float
    spleen_ml: float
    kidney_ml: tuple[float, float]
    pancreas_ml: float
    pancreas_fat: float
    aorta_mm: float

    def as_dict(self) -> dict:
        """Plain-JSON description (stored in the phantom ``info``)."""
        out = asdict(self)
        out["kidney_ml"] = list(self.kidney_ml)
        return out


def check_patient_args(sex: str | None, age: float | None) -> None:
    """Validate the optional sex and age of a phantom.

    Raises:
        ValueError: for an unknown sex or an age outside :data:`AGE_RANGE`.
    """
    if sex is not None and sex not in SEXES:
        raise ValueError(f"sex must be one of {SEXES} or None, got {sex!r}")
    if age is not None and not (isinstance(age, int | float) and AGE_RANGE[0] <= age <= AGE_RANGE[1]):
        raise ValueError(f"age must be a number of years in {AGE_RANGE} or None, got {age!r}")


def draw_patient(rng: np.random.Generator, sex: str | None = None, age: float | None = None) -> Patient:
    """Draw one adult; ``sex`` and ``age`` fix those parameters and shift the other distributions accordingly.

    Args:
        rng: random generator (the anatomy stream of the seed).
        sex: "female", "male" or None (either, 50 %).
        age: years in :data:`AGE_RANGE` or None (uniform 25-80).

    Returns:
        The :class:`Patient`.
    """
    check_patient_args(sex, age)
    # draw every variable even when fixed, so fixing one parameter does not shift the random stream of the others
    sex_draw = SEXES[int(rng.integers(2))]
    age_draw = float(rng.uniform(25.0, 80.0))
    z = rng.standard_normal(12)
    sex = sex_draw if sex is None else sex
    age = age_draw if age is None else float(age)
    male = sex == "male"
    height = (176.0 if male else 163.0) + 7.0 * z[0]
    bmi = float(np.clip(26.5 + 4.5 * z[1] + 0.04 * (age - 50.0), 18.0, 42.0))
    weight = bmi * (height / 100.0) ** 2
    bsa = float(np.sqrt(height * weight / 3600.0))
    over = bmi - 25.0  # fat grows with BMI; men store relatively more viscerally, women subcutaneously
    sc_fat = float(np.clip((14.0 if male else 20.0) + (2.2 if male else 3.0) * over + 6.0 * z[2], 4.0, 80.0))
    vis = float(np.clip((1.1 if male else 0.8) + 0.09 * over + 0.01 * (age - 50.0) + 0.3 * z[3], 0.1, 2.5))
    old = max(0.0, age - 60.0)
    liver = (1072.8 * bsa - 345.7) * np.exp(0.3 * z[4]) * (1.0 - 0.004 * old)
    spleen = 215.0 * (1.08 if male else 0.92) * (height / 170.0) * np.exp(0.3 * z[5]) * (1.0 - 0.006 * old)
    kidney_mean = 160.0 * (1.05 if male else 0.95) * (bsa / 1.85) * np.exp(0.18 * z[6]) * (1.0 - 0.004 * old)
    kidneys = (kidney_mean * 0.975 * np.exp(0.05 * z[7]), kidney_mean * 1.025 * np.exp(0.05 * z[8]))
    pancreas = 75.0 * (1.05 if male else 0.95) * np.exp(0.28 * z[9]) * (1.0 - 0.008 * max(0.0, age - 60.0))
    pancreas_fat = float(np.clip(0.04 + 0.004 * max(0.0, age - 30.0) + 0.02 * z[10], 0.0, 0.3))
    aorta = (24.0 if male else 22.0) + 0.1 * max(0.0, age - 40.0) + 2.0 * z[11]
    return Patient(
        sex=sex,
        age=age,
        height_cm=float(height),
        bmi=bmi,
        bsa_m2=bsa,
        subcutaneous_fat_mm=sc_fat,
        visceral_fat=vis,
        liver_ml=float(liver),
        spleen_ml=float(np.clip(spleen, 60.0, 600.0)),
        kidney_ml=(float(kidneys[0]), float(kidneys[1])),
        pancreas_ml=float(np.clip(pancreas, 30.0, 160.0)),
        pancreas_fat=pancreas_fat,
        aorta_mm=float(np.clip(aorta, 18.5, 30.0)),
    )
