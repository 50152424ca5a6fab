"""Evaluation metrics for generated talking-head clips.

| module | metrics |
| --- | --- |
| `frechet` | Fréchet distance of feature Gaussians (FID, FVD) with a pluggable feature network, streaming stats |
| `inception` | pytorch-fid's InceptionV3 in Flax, `load_fid_inception`, `fid_feature_fn` |
| `image_metrics` | PSNR, SSIM (scikit-image conventions), landmark distance |
| `syncnet` / `mfcc` | SyncNet in Flax, `load_syncnet` (syncnet_v2), Sync-C / Sync-D, its MFCCs |
| `lipsync` | synthetic world: audio-envelope / jaw correlation at the best offset |
| `emotion_metrics` | emotion accuracy, intensity faithfulness (Spearman), expression error |
| `identity` | identity similarity (pluggable features), synthetic face features and attribute colours |
"""
