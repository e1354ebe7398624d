"""Near- and exact-duplicate removal, the algorithms only: MinHash signatures, LSH banding, exact keys,
distributed clustering. The stage that drives them over tasks and ranks is data_pipeline/stages/ (which this
package never imports)."""
