/**
 * The ground truth of one synthetic figure: what a radiologist or pathologist would say the image shows. The
 * renderer draws from it, and captions, questions, conversations and the chat score are all written from it —
 * so every answer in the world can be checked.
 *
 * Sides are the patient's: in radiology images the patient's right is on the image's left.
 */
import type { Rand } from './canvas.js';

/** LLaVA-Med's five domains, under the names its instruction data uses */
export const MODALITIES = ['chest_xray', 'ct_scan', 'mri', 'histology', 'gross'] as const;
export type Modality = (typeof MODALITIES)[number];

export type Side = 'left' | 'right';

export interface Truth {
  id: string;
  modality: Modality;
  /** chest_xray: PA | AP; ct_scan / mri: axial; histology: H&E or IHC section; gross: cut surface */
  view: string;
  /** what the image is of: chest, abdomen, brain, colon, breast, lymph node, kidney, liver, lung, spleen */
  organ: string;
  /** 'none' for a normal study */
  finding: string;
  side: Side | null;
  /** where the finding is, in words ("upper zone", "frontal lobe", "liver", "kidney") — null when not applicable */
  location: string | null;
  sizeMm: number | null;
  count: number | null;
  /** mri */
  sequence?: 'T1' | 'T2';
  /** ct_scan */
  contrast?: boolean;
  /** histology */
  stain?: 'H&E' | 'IHC';
  magnification?: 10 | 40;
}

/** the findings each modality can show, 'none' first */
export const FINDINGS: Record<Modality, readonly string[]> = {
  chest_xray: ['none', 'nodule', 'mass', 'pleural effusion', 'cardiomegaly', 'pneumothorax'],
  ct_scan: ['none', 'nodule', 'pleural effusion', 'liver lesion', 'renal mass'],
  mri: ['none', 'mass', 'white matter lesions'],
  histology: ['none', 'carcinoma', 'inflammation'],
  gross: ['none', 'tumor', 'cyst', 'hemorrhage'],
};

export const MODALITY_NAME: Record<Modality, string> = {
  chest_xray: 'chest x-ray', ct_scan: 'ct', mri: 'mri', histology: 'histopathology', gross: 'gross pathology',
};

const BRAIN_LOBES = ['frontal lobe', 'parietal lobe', 'temporal lobe', 'occipital lobe'] as const;

/** one case of `modality`; a third of the cases are normal */
export function sampleTruth(id: string, modality: Modality, rng: Rand): Truth {
  const abnormal = FINDINGS[modality].slice(1);
  const finding = rng.chance(0.3) ? 'none' : rng.pick(abnormal);
  const side = (): Side => rng.chance(0.5) ? 'left' : 'right';
  const t: Truth = { id, modality, view: '', organ: '', finding, side: null, location: null, sizeMm: null, count: null };
  switch (modality) {
    case 'chest_xray':
      t.view = rng.chance(0.7) ? 'PA' : 'AP';
      t.organ = 'chest';
      if (finding === 'nodule' || finding === 'mass') {
        t.side = side();
        t.location = rng.chance(0.5) ? 'upper zone' : 'lower zone';
        t.sizeMm = finding === 'nodule' ? rng.int(8, 25) : rng.int(35, 70);
        t.count = 1;
      } else if (finding === 'pleural effusion' || finding === 'pneumothorax') {
        t.side = side();
      }
      break;
    case 'ct_scan': {
      t.view = 'axial';
      t.contrast = rng.chance(0.5);
      const chest = finding === 'none' ? rng.chance(0.5) : finding === 'nodule' || finding === 'pleural effusion';
      t.organ = chest ? 'chest' : 'abdomen';
      if (finding === 'nodule') {
        t.side = side(); t.location = 'lung'; t.sizeMm = rng.int(6, 25); t.count = 1;
      } else if (finding === 'pleural effusion') {
        t.side = side(); t.location = 'pleural space';
      } else if (finding === 'liver lesion') {
        t.location = 'liver'; t.count = rng.int(1, 3); t.sizeMm = rng.int(10, 35);
      } else if (finding === 'renal mass') {
        t.side = side(); t.location = 'kidney'; t.sizeMm = rng.int(20, 50); t.count = 1;
      }
      break;
    }
    case 'mri':
      t.view = 'axial';
      t.organ = 'brain';
      t.sequence = rng.chance(0.5) ? 'T1' : 'T2';
      if (finding === 'mass') {
        t.side = side(); t.location = rng.pick(BRAIN_LOBES); t.sizeMm = rng.int(15, 45); t.count = 1;
      } else if (finding === 'white matter lesions') {
        t.location = 'periventricular white matter'; t.count = rng.int(2, 5); t.sizeMm = rng.int(3, 8);
      }
      break;
    case 'histology':
      t.organ = finding === 'inflammation' ? rng.pick(['colon', 'breast']) : rng.pick(['colon', 'breast', 'lymph node']);
      t.stain = rng.chance(0.75) ? 'H&E' : 'IHC';
      t.view = `${t.stain} section`;
      t.magnification = rng.chance(0.5) ? 10 : 40;
      break;
    case 'gross':
      t.view = 'cut surface';
      t.organ = rng.pick(['kidney', 'liver', 'lung', 'spleen']);
      if (finding === 'tumor' || finding === 'cyst') {
        t.count = rng.chance(0.7) ? 1 : 2;
        t.sizeMm = finding === 'tumor' ? rng.int(15, 45) : rng.int(8, 25);
        t.location = t.organ;
      } else if (finding === 'hemorrhage') {
        t.location = t.organ;
      }
      break;
  }
  return t;
}

/** the specific name of a histology finding in its organ ("adenocarcinoma" in the colon) */
export function findingName(t: Truth): string {
  if (t.modality === 'histology' && t.finding === 'carcinoma') {
    return t.organ === 'colon' ? 'adenocarcinoma' : t.organ === 'breast' ? 'ductal carcinoma' : 'metastatic carcinoma';
  }
  return t.finding;
}

/** where the finding is, in the words a report would use ("right upper zone", "left frontal lobe", "left kidney") */
export function whereText(t: Truth): string | null {
  if (!t.location && !t.side) return null;
  if (t.side && t.location) return `${t.side} ${t.location}`;
  if (t.side) return t.modality === 'chest_xray' || t.modality === 'ct_scan' ? `${t.side} hemithorax` : t.side;
  return t.location;
}
