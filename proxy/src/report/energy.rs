//! The Sustainable Web Design model v4, as CO2.js implements it: energy per byte transferred,
//! split between data centres, networks and user devices, operational and embodied, times a
//! grid intensity. Every constant is here, and written into the report.

use serde::Serialize;

/// kWh per GB (10⁹ bytes), operational.
pub(crate) const OPERATIONAL: Segments = Segments { data_centre: 0.055, network: 0.059, device: 0.080 };
/// kWh per GB, embodied.
pub(crate) const EMBODIED: Segments = Segments { data_centre: 0.012, network: 0.013, device: 0.081 };
/// gCO2e per kWh, the model's global figure. CO2.js applies a chosen grid intensity to the
/// operational energy only: embodied energy was spent where the hardware was made, so it stays
/// at this global figure whatever `--grid-intensity` says.
pub(crate) const GLOBAL_INTENSITY: f64 = 494.0;
/// CO2.js's grid data for France (gCO2e/kWh).
pub(crate) const FRANCE_INTENSITY: f64 = 44.18;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct Segments {
    pub data_centre: f64,
    pub network: f64,
    pub device: f64,
}

impl Segments {
    fn total(self) -> f64 {
        self.data_centre + self.network + self.device
    }
}

/// The grid intensity to use: `world` (494), `FR` (44.18) or a number in gCO2e/kWh.
pub(crate) fn intensity(s: &str) -> Result<f64, String> {
    match s.to_ascii_lowercase().as_str() {
        "world" | "global" => Ok(GLOBAL_INTENSITY),
        "fr" | "france" => Ok(FRANCE_INTENSITY),
        other => other
            .parse::<f64>()
            .ok()
            .filter(|g| g.is_finite() && *g >= 0.0)
            .ok_or_else(|| format!("--grid-intensity {s:?}: give world, FR or a number of gCO2e/kWh")),
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Estimate {
    pub bytes: f64,
    pub kwh: f64,
    pub g_co2e: f64,
}

/// The constants in use: the model's own unless `--swd-constants` gives others.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Constants {
    pub operational_kwh_per_gb: Segments,
    pub embodied_kwh_per_gb: Segments,
    pub grid_intensity: f64,
}

impl Constants {
    pub(crate) fn new(intensity: f64) -> Constants {
        Constants { operational_kwh_per_gb: OPERATIONAL, embodied_kwh_per_gb: EMBODIED, grid_intensity: intensity }
    }

    /// Six kWh/GB figures, `dc,network,device` operational then embodied.
    pub(crate) fn with_segments(self, spec: &str) -> Result<Constants, String> {
        let v: Vec<f64> = spec
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--swd-constants {spec:?}: {e}"))?;
        let [a, b, c, d, e, f] = v[..] else {
            return Err(format!(
                "--swd-constants {spec:?}: give six kWh/GB figures (operational then embodied: data centre, network, device)"
            ));
        };
        if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(format!("--swd-constants {spec:?}: figures are kWh per GB, 0 or more"));
        }
        Ok(Constants {
            operational_kwh_per_gb: Segments { data_centre: a, network: b, device: c },
            embodied_kwh_per_gb: Segments { data_centre: d, network: e, device: f },
            ..self
        })
    }

    fn estimate(&self, bytes: f64, operational: f64, embodied: f64) -> Estimate {
        let gb = bytes / 1e9;
        Estimate {
            bytes,
            kwh: gb * (operational + embodied),
            g_co2e: gb * (operational * self.grid_intensity + embodied * GLOBAL_INTENSITY),
        }
    }

    /// Bytes delivered to users: every segment counts.
    pub(crate) fn transfer(&self, bytes: f64) -> Estimate {
        self.estimate(bytes, self.operational_kwh_per_gb.total(), self.embodied_kwh_per_gb.total())
    }

    /// Bytes the origin did not produce (cache hits): at most the data-centre share, since the
    /// edge still sent them over the network to a device.
    pub(crate) fn data_centre_only(&self, bytes: f64) -> Estimate {
        self.estimate(bytes, self.operational_kwh_per_gb.data_centre, self.embodied_kwh_per_gb.data_centre)
    }
}

/// The model's rating of one page view (grams per view, first visit).
pub(crate) fn rating(g_per_view: f64) -> &'static str {
    [(0.040, "A+"), (0.079, "A"), (0.145, "B"), (0.209, "C"), (0.278, "D"), (0.359, "E")]
        .iter()
        .find(|(limit, _)| g_per_view <= *limit)
        .map_or("F", |(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_own_example() {
        // A 1 MB page at the global intensity: 0.001 GB × 0.30 kWh/GB × 494 ≈ 0.148 g (C).
        let m = Constants::new(GLOBAL_INTENSITY);
        let e = m.transfer(1e6);
        assert!((e.kwh - 0.0003).abs() < 1e-12, "{e:?}");
        assert!((e.g_co2e - 0.1482).abs() < 1e-9, "{e:?}");
        assert_eq!(rating(e.g_co2e), "C");
        assert_eq!(rating(0.04), "A+");
        assert_eq!(rating(1.0), "F");
        assert!((Constants::new(1.0).data_centre_only(1e9).kwh - 0.067).abs() < 1e-12);
        let custom = m.with_segments("1,0,0,0,0,0").unwrap();
        assert_eq!((custom.transfer(1e9).kwh, custom.grid_intensity), (1.0, GLOBAL_INTENSITY));
        assert!(m.with_segments("1,2").is_err() && m.with_segments("1,1,1,1,1,-1").is_err() && m.with_segments("a,1,1,1,1,1").is_err());
        assert_eq!(intensity("FR"), Ok(44.18));
        assert_eq!(intensity("100"), Ok(100.0));
        assert!(intensity("-1").is_err() && intensity("lots").is_err());
    }

    #[test]
    fn a_national_grid_changes_the_operational_share_only() {
        // CO2.js SWDM v4 with France's grid: 0.194 kWh/GB × 44.18 + 0.106 kWh/GB × 494 per GB.
        let fr = Constants::new(FRANCE_INTENSITY);
        let gb = fr.transfer(1e9);
        assert!((gb.kwh - 0.3).abs() < 1e-12, "{gb:?}");
        assert!((gb.g_co2e - (0.194 * 44.18 + 0.106 * 494.0)).abs() < 1e-9, "{gb:?}");
        // A 1 MB first visit on that grid: 0.0609 g, an A (a global grid makes it a C).
        let page = fr.transfer(1e6).g_co2e;
        assert!((page - 0.06093492).abs() < 1e-9 && rating(page) == "A", "{page}");
        let dc = fr.data_centre_only(1e9);
        assert!((dc.g_co2e - (0.055 * 44.18 + 0.012 * 494.0)).abs() < 1e-9, "{dc:?}");
        // Embodied figures set to zero leave the chosen grid alone in the product.
        let op_only = Constants::new(100.0).with_segments("1,0,0,0,0,0").unwrap();
        assert_eq!(op_only.transfer(1e9).g_co2e, 100.0);
    }
}
