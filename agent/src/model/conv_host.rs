//! A 2-d convolution and its gradients on host memory (f32, NCHW, one group), as one matrix
//! product per chunk of samples: the flex backend's convolution (`super::conv_flex`).
//!
//! Burn's flex convolution multiplies each sample's im2col matrix by the weights apart, in
//! tiles of at most 512 output positions. The CIFAR AlexNet's later layers have 16 or 4 output
//! positions per sample, so those products are a weight matrix of up to 384 × 3456 times 4
//! columns: the weights stream through the cache once per sample, and the GEMM's micro-kernels
//! run on 4 of their 8 lanes. Here the columns of many samples sit side by side, so that one
//! product covers [`FORWARD_COLUMNS`] output positions or more. The input gradient is the
//! weights' transpose times the output gradient, scattered back (col2im); the weight gradient is
//! the output gradient times the columns' transpose, one partial sum per chunk of samples, added
//! in the chunks' order.
//!
//! Chunks depend on the shape only, never on the number of threads, and each product runs on
//! one thread (chunks run in parallel on the caller's rayon pool), so the same inputs give the
//! same values bit for bit on any machine and with any number of threads.

use gemm::Parallelism;
use rayon::prelude::*;

/// Output positions per chunk in the forward pass: one product of at least this many columns
/// (whole samples, so a chunk owns a contiguous part of the output).
pub const FORWARD_COLUMNS: usize = 256;

/// Output positions per chunk in the backward pass, whose weight gradient sums over them.
pub const BACKWARD_COLUMNS: usize = 512;

/// The sizes of one convolution: input `batch × channels_in × input[0] × input[1]`, weight
/// `channels_out × channels_in × kernel[0] × kernel[1]`, the same padding on both sides of
/// each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub channels_in: usize,
    pub input: [usize; 2],
    pub channels_out: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

/// Why a shape cannot be convolved here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvShapeError {
    #[error("the input has {input} channels but the weight expects {weight}")]
    ChannelMismatch { input: usize, weight: usize },
    #[error("a stride or dilation of 0")]
    ZeroStep,
    #[error("no input or output channels, or an input of no pixels")]
    EmptyTensor,
    #[error(
        "the padded input ({padded}) is smaller than the dilated kernel ({kernel}) on axis {axis}"
    )]
    KernelLargerThanInput {
        axis: usize,
        padded: usize,
        kernel: usize,
    },
}

impl ConvShape {
    /// The shape of `input` (NCHW) convolved with `weight` (OIHW), checked.
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<Self, ConvShapeError> {
        if input[1] != weight[1] {
            return Err(ConvShapeError::ChannelMismatch {
                input: input[1],
                weight: weight[1],
            });
        }
        if input[1] == 0 || weight[0] == 0 || input[2] == 0 || input[3] == 0 {
            return Err(ConvShapeError::EmptyTensor);
        }
        if stride.contains(&0) || dilation.contains(&0) {
            return Err(ConvShapeError::ZeroStep);
        }
        for axis in 0..2 {
            let padded = input[2 + axis] + 2 * padding[axis];
            let kernel = dilation[axis] * (weight[2 + axis].max(1) - 1) + 1;
            if weight[2 + axis] == 0 || padded < kernel {
                return Err(ConvShapeError::KernelLargerThanInput {
                    axis,
                    padded,
                    kernel,
                });
            }
        }
        Ok(ConvShape {
            batch: input[0],
            channels_in: input[1],
            input: [input[2], input[3]],
            channels_out: weight[0],
            kernel: [weight[2], weight[3]],
            stride,
            padding,
            dilation,
        })
    }

    /// The output's height and width.
    pub fn output(&self) -> [usize; 2] {
        std::array::from_fn(|axis| {
            let padded = self.input[axis] + 2 * self.padding[axis];
            let kernel = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            (padded - kernel) / self.stride[axis] + 1
        })
    }

    /// The output's dimensions, NCHW.
    pub fn output_dims(&self) -> [usize; 4] {
        let [height, width] = self.output();
        [self.batch, self.channels_out, height, width]
    }

    /// The input's dimensions, NCHW.
    pub fn batch_input_dims(&self) -> Vec<usize> {
        vec![self.batch, self.channels_in, self.input[0], self.input[1]]
    }

    /// The weight's dimensions, OIHW.
    pub fn weight_dims(&self) -> Vec<usize> {
        vec![
            self.channels_out,
            self.channels_in,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn output_positions(&self) -> usize {
        let [height, width] = self.output();
        height * width
    }

    /// Rows of the im2col matrix: one per input channel and kernel position.
    fn column_len(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    fn input_per_sample(&self) -> usize {
        self.channels_in * self.input[0] * self.input[1]
    }

    fn output_per_sample(&self) -> usize {
        self.channels_out * self.output_positions()
    }

    fn weight_len(&self) -> usize {
        self.channels_out * self.column_len()
    }

    /// The input row (axis 0) or column (axis 1) that output position `output` reads at kernel
    /// offset `kernel`, or `None` in the padding.
    fn input_index(&self, output: usize, kernel: usize, axis: usize) -> Option<usize> {
        (output * self.stride[axis] + kernel * self.dilation[axis])
            .checked_sub(self.padding[axis])
            .filter(|&position| position < self.input[axis])
    }

    /// Along `axis`, for each kernel offset, the output positions that read inside the image
    /// (the others read padding).
    fn taps(&self, axis: usize) -> Vec<Tap> {
        let outputs = self.output()[axis];
        (0..self.kernel[axis])
            .map(|kernel| {
                let inside = |output: &usize| self.input_index(*output, kernel, axis).is_some();
                let first = (0..outputs).find(inside).unwrap_or(outputs);
                let end = (first..outputs)
                    .find(|output| !inside(output))
                    .unwrap_or(outputs);
                debug_assert!(
                    (end..outputs).all(|output| !inside(&output)),
                    "the output positions inside the image are contiguous"
                );
                Tap {
                    outputs: first..end,
                    first_input: self.input_index(first, kernel, axis).unwrap_or(0),
                    stride: self.stride[axis],
                }
            })
            .collect()
    }

    /// Whole samples per chunk so that a chunk has at least `columns` output positions.
    fn samples_per_chunk(&self, columns: usize) -> usize {
        columns.div_ceil(self.output_positions().max(1)).max(1)
    }
}

/// The output positions along one axis that read inside the image at one kernel offset: a
/// contiguous range, whose first position reads input `first_input` and each next one `stride`
/// further.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tap {
    outputs: std::ops::Range<usize>,
    first_input: usize,
    stride: usize,
}

impl Tap {
    /// The input positions of [`Tap::outputs`], in order.
    fn inputs(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.outputs.len()).map(|step| self.first_input + step * self.stride)
    }
}

/// `weight ⋆ input + bias`, NCHW. `input` holds `shape.batch` samples, `weight` is OIHW.
pub fn conv2d_forward(
    shape: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut output = vec![0.0f32; shape.batch * shape.output_per_sample()];
    conv2d_forward_into(shape, input, weight, bias, &mut output);
    output
}

/// [`conv2d_forward`] into `output` (`shape.batch` samples of [`ConvShape::output_dims`]),
/// every element of which it writes: it may hold anything before (a fresh libtorch tensor's
/// uninitialised memory, `super::conv_torch_host`).
pub fn conv2d_forward_into(
    shape: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    assert_eq!(
        input.len(),
        shape.batch * shape.input_per_sample(),
        "input length"
    );
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), shape.channels_out, "bias length");
    }
    assert_eq!(
        output.len(),
        shape.batch * shape.output_per_sample(),
        "output length"
    );
    let per_chunk = shape.samples_per_chunk(FORWARD_COLUMNS);
    if output.is_empty() {
        return;
    }
    output
        .par_chunks_mut(per_chunk * shape.output_per_sample())
        .zip(input.par_chunks(per_chunk * shape.input_per_sample()))
        .for_each(|(output, input)| {
            let samples = input.len() / shape.input_per_sample();
            let columns_count = samples * shape.output_positions();
            let columns = gather_columns(shape, input, samples);
            // product[O × n] = weight[O × K] · columns[K × n]
            let mut product = vec![0.0f32; shape.channels_out * columns_count];
            matmul(
                MatrixMut::row_major(&mut product, shape.channels_out, columns_count),
                Matrix::row_major(weight, shape.channels_out, shape.column_len()),
                Matrix::row_major(&columns, shape.column_len(), columns_count),
            );
            let positions = shape.output_positions();
            for (sample, output) in output.chunks_mut(shape.output_per_sample()).enumerate() {
                for (channel, output) in output.chunks_mut(positions).enumerate() {
                    let start = channel * columns_count + sample * positions;
                    let offset = bias.map_or(0.0, |bias| bias[channel]);
                    for (value, computed) in output.iter_mut().zip(&product[start..][..positions]) {
                        *value = computed + offset;
                    }
                }
            }
        });
}

/// The gradients of a convolution, those asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvGradients {
    pub input: Option<Vec<f32>>,
    pub weight: Option<Vec<f32>>,
    pub bias: Option<Vec<f32>>,
}

/// One chunk's partial sums of the weight and bias gradients, where wanted.
type ChunkSums = (Option<Vec<f32>>, Option<Vec<f32>>);

/// The gradients of `conv2d_forward(shape, input, weight, bias)` for the output gradient
/// `grad_output` (NCHW): of the input, the weight and the bias, where `wanted` says so.
pub fn conv2d_backward(
    shape: &ConvShape,
    input: &[f32],
    weight: &[f32],
    grad_output: &[f32],
    wanted: [bool; 3],
) -> ConvGradients {
    assert_eq!(
        input.len(),
        shape.batch * shape.input_per_sample(),
        "input length"
    );
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    assert_eq!(
        grad_output.len(),
        shape.batch * shape.output_per_sample(),
        "output gradient length"
    );
    let [want_input, want_weight, want_bias] = wanted;
    let per_chunk = shape.samples_per_chunk(BACKWARD_COLUMNS);
    let chunk_count = shape.batch.div_ceil(per_chunk);
    let mut grad_input = want_input.then(|| vec![0.0f32; input.len()]);
    let input_chunks: Vec<&mut [f32]> = match grad_input.as_mut() {
        Some(grad_input) if !grad_input.is_empty() => grad_input
            .chunks_mut(per_chunk * shape.input_per_sample())
            .collect(),
        _ => (0..chunk_count).map(|_| <&mut [f32]>::default()).collect(),
    };
    debug_assert_eq!(input_chunks.len(), chunk_count);
    let partial_sums: Vec<ChunkSums> = input_chunks
        .into_par_iter()
        .enumerate()
        .map(|(chunk, grad_input)| {
            let first = chunk * per_chunk;
            let samples = per_chunk.min(shape.batch - first);
            let columns_count = samples * shape.output_positions();
            let grad_output = &grad_output[first * shape.output_per_sample()..]
                [..samples * shape.output_per_sample()];
            let grad_matrix = output_gradient_matrix(shape, grad_output, samples);
            let grad_matrix = Matrix::row_major(&grad_matrix, shape.channels_out, columns_count);
            let weight_sum = want_weight.then(|| {
                let input = &input[first * shape.input_per_sample()..]
                    [..samples * shape.input_per_sample()];
                let columns = gather_columns(shape, input, samples);
                // ∂W[O × K] = ∂Y[O × n] · columns[K × n]ᵀ
                let mut sum = vec![0.0f32; shape.weight_len()];
                matmul(
                    MatrixMut::row_major(&mut sum, shape.channels_out, shape.column_len()),
                    grad_matrix,
                    Matrix::row_major(&columns, shape.column_len(), columns_count).transposed(),
                );
                sum
            });
            if want_input {
                // ∂columns[K × n] = W[O × K]ᵀ · ∂Y[O × n], then each column back to its pixels.
                let mut grad_columns = vec![0.0f32; shape.column_len() * columns_count];
                matmul(
                    MatrixMut::row_major(&mut grad_columns, shape.column_len(), columns_count),
                    Matrix::row_major(weight, shape.channels_out, shape.column_len()).transposed(),
                    grad_matrix,
                );
                scatter_columns(shape, &grad_columns, samples, grad_input);
            }
            let bias_sum = want_bias.then(|| {
                let positions = shape.output_positions();
                let mut sum = vec![0.0f32; shape.channels_out];
                for sample in grad_output.chunks(shape.output_per_sample()) {
                    for (total, channel) in sum.iter_mut().zip(sample.chunks(positions)) {
                        *total += channel.iter().sum::<f32>();
                    }
                }
                sum
            });
            (weight_sum, bias_sum)
        })
        .collect();
    let add_in_chunk_order = |sums: Vec<Vec<f32>>| {
        sums.into_iter().reduce(|mut total, sum| {
            total.iter_mut().zip(&sum).for_each(|(t, s)| *t += s);
            total
        })
    };
    let (weight_sums, bias_sums): (Vec<_>, Vec<_>) = partial_sums.into_iter().unzip();
    let zero_batch = |len: usize| (shape.batch == 0).then(|| vec![0.0f32; len]);
    ConvGradients {
        input: grad_input,
        weight: want_weight.then(|| {
            add_in_chunk_order(weight_sums.into_iter().flatten().collect())
                .or_else(|| zero_batch(shape.weight_len()))
                .expect("a chunk per sample group")
        }),
        bias: want_bias.then(|| {
            add_in_chunk_order(bias_sums.into_iter().flatten().collect())
                .or_else(|| zero_batch(shape.channels_out))
                .expect("a chunk per sample group")
        }),
    }
}

/// The im2col matrix of `samples` samples: row `(c, kh, kw)` (the weight's order), column
/// `(sample, oh, ow)`, `K × n` row-major; 0 where the kernel reads padding.
fn gather_columns(shape: &ConvShape, input: &[f32], samples: usize) -> Vec<f32> {
    let [output_height, output_width] = shape.output();
    let positions = output_height * output_width;
    let columns_count = samples * positions;
    let [height, width] = shape.input;
    let (row_taps, column_taps) = (shape.taps(0), shape.taps(1));
    let mut columns = vec![0.0f32; shape.column_len() * columns_count];
    for sample in 0..samples {
        for plane in 0..shape.channels_in {
            let image =
                &input[(sample * shape.channels_in + plane) * height * width..][..height * width];
            for (kernel_row, row_tap) in row_taps.iter().enumerate() {
                for (kernel_column, column_tap) in column_taps.iter().enumerate() {
                    let row =
                        (plane * shape.kernel[0] + kernel_row) * shape.kernel[1] + kernel_column;
                    let destination =
                        &mut columns[row * columns_count + sample * positions..][..positions];
                    // Rows and columns outside the taps read padding: they stay 0.
                    for (output_row, input_row) in row_tap.outputs.clone().zip(row_tap.inputs()) {
                        let source = &image[input_row * width..][..width];
                        let destination = &mut destination[output_row * output_width..]
                            [column_tap.outputs.clone()];
                        for (value, input_column) in destination.iter_mut().zip(column_tap.inputs())
                        {
                            *value = source[input_column];
                        }
                    }
                }
            }
        }
    }
    columns
}

/// Adds each entry of an im2col-shaped gradient (`K × n`, as [`gather_columns`] lays out) to
/// the input pixel it was read from (col2im), in a fixed order.
fn scatter_columns(
    shape: &ConvShape,
    grad_columns: &[f32],
    samples: usize,
    grad_input: &mut [f32],
) {
    let [output_height, output_width] = shape.output();
    let positions = output_height * output_width;
    let columns_count = samples * positions;
    let [height, width] = shape.input;
    let (row_taps, column_taps) = (shape.taps(0), shape.taps(1));
    for sample in 0..samples {
        for plane in 0..shape.channels_in {
            let image = &mut grad_input[(sample * shape.channels_in + plane) * height * width..]
                [..height * width];
            for (kernel_row, row_tap) in row_taps.iter().enumerate() {
                for (kernel_column, column_tap) in column_taps.iter().enumerate() {
                    let row =
                        (plane * shape.kernel[0] + kernel_row) * shape.kernel[1] + kernel_column;
                    let source =
                        &grad_columns[row * columns_count + sample * positions..][..positions];
                    // Entries that read padding have no pixel to go back to.
                    for (output_row, input_row) in row_tap.outputs.clone().zip(row_tap.inputs()) {
                        let destination = &mut image[input_row * width..][..width];
                        let source =
                            &source[output_row * output_width..][column_tap.outputs.clone()];
                        for (value, input_column) in source.iter().zip(column_tap.inputs()) {
                            destination[input_column] += value;
                        }
                    }
                }
            }
        }
    }
}

/// `grad_output` of `samples` samples (NCHW) as the `O × n` matrix the products take: row
/// `o`, column `(sample, oh, ow)`.
fn output_gradient_matrix(shape: &ConvShape, grad_output: &[f32], samples: usize) -> Vec<f32> {
    let positions = shape.output_positions();
    let columns_count = samples * positions;
    let mut matrix = vec![0.0f32; shape.channels_out * columns_count];
    for (sample, gradient) in grad_output.chunks(shape.output_per_sample()).enumerate() {
        for (channel, gradient) in gradient.chunks(positions).enumerate() {
            matrix[channel * columns_count + sample * positions..][..positions]
                .copy_from_slice(gradient);
        }
    }
    matrix
}

/// A read-only matrix in memory: `rows × cols`, entry `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same memory read as the transpose.
    fn transposed(self) -> Self {
        Matrix {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// A row-major matrix to write.
struct MatrixMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatrixMut<'a> {
    fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        MatrixMut { data, rows, cols }
    }
}

/// `destination = lhs · rhs`, on this thread (gemm's kernels, no inner parallelism: the chunks
/// are the parallelism, and this keeps the summation order independent of the thread count).
fn matmul(destination: MatrixMut<'_>, lhs: Matrix<'_>, rhs: Matrix<'_>) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions");
    assert_eq!(
        (destination.rows, destination.cols),
        (lhs.rows, rhs.cols),
        "output dimensions"
    );
    let in_bounds = |matrix: &Matrix<'_>| {
        matrix.rows == 0
            || matrix.cols == 0
            || (matrix.rows - 1) * matrix.row_stride + (matrix.cols - 1) * matrix.col_stride
                < matrix.data.len()
    };
    assert!(
        in_bounds(&lhs) && in_bounds(&rhs),
        "strides within the data"
    );
    if destination.rows == 0 || destination.cols == 0 {
        return;
    }
    // SAFETY: every index the product reads, (i, j) → i·row_stride + j·col_stride for i < rows
    // and j < cols, is in bounds (checked above) and the destination is a row-major
    // `rows × cols` slice we borrow mutably, disjoint from the inputs. gemm's arguments are
    // (m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, α, β,
    // conjugations, parallelism), computing dst = α·dst + β·lhs·rhs, with dst not read.
    unsafe {
        gemm::gemm(
            destination.rows,
            destination.cols,
            lhs.cols,
            destination.data.as_mut_ptr(),
            1,
            destination.cols as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_values(seed: u64, count: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..count).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The input pixel that output `(i, j)` reads at kernel entry `(p, q)`, written out apart
    /// from `ConvShape::input_index`: `(i·s + p·d − pad, j·s + q·d − pad)`, `None` outside.
    fn definition_pixel(
        shape: &ConvShape,
        [i, j]: [usize; 2],
        [p, q]: [usize; 2],
    ) -> Option<(usize, usize)> {
        let signed = |value: usize| value as i64;
        let row = signed(i) * signed(shape.stride[0]) + signed(p) * signed(shape.dilation[0])
            - signed(shape.padding[0]);
        let col = signed(j) * signed(shape.stride[1]) + signed(q) * signed(shape.dilation[1])
            - signed(shape.padding[1]);
        let inside = (0..signed(shape.input[0])).contains(&row)
            && (0..signed(shape.input[1])).contains(&col);
        inside.then_some((row as usize, col as usize))
    }

    /// The convolution by its definition, in f64, one output at a time:
    /// y[b,o,i,j] = bias[o] + Σ_{c,p,q} w[o,c,p,q] · x[b, c, i·s + p·d − pad, j·s + q·d − pad].
    fn reference_forward(shape: &ConvShape, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f64> {
        let [out_h, out_w] = shape.output();
        let [h, wd] = shape.input;
        let mut y = Vec::new();
        for b in 0..shape.batch {
            for o in 0..shape.channels_out {
                for i in 0..out_h {
                    for j in 0..out_w {
                        let mut sum = f64::from(bias[o]);
                        for c in 0..shape.channels_in {
                            for p in 0..shape.kernel[0] {
                                for q in 0..shape.kernel[1] {
                                    let Some((row, col)) = definition_pixel(shape, [i, j], [p, q])
                                    else {
                                        continue;
                                    };
                                    let weight = w[((o * shape.channels_in + c) * shape.kernel[0]
                                        + p)
                                        * shape.kernel[1]
                                        + q];
                                    let pixel =
                                        x[((b * shape.channels_in + c) * h + row) * wd + col];
                                    sum += f64::from(weight) * f64::from(pixel);
                                }
                            }
                        }
                        y.push(sum);
                    }
                }
            }
        }
        y
    }

    /// The gradients of L = Σ y · g by their definitions: ∂L/∂x, ∂L/∂w and ∂L/∂b, in f64.
    fn reference_backward(shape: &ConvShape, x: &[f32], w: &[f32], g: &[f32]) -> [Vec<f64>; 3] {
        let [out_h, out_w] = shape.output();
        let [h, wd] = shape.input;
        let mut grad_x = vec![0.0f64; x.len()];
        let mut grad_w = vec![0.0f64; w.len()];
        let mut grad_b = vec![0.0f64; shape.channels_out];
        for b in 0..shape.batch {
            for o in 0..shape.channels_out {
                for i in 0..out_h {
                    for j in 0..out_w {
                        let upstream =
                            f64::from(g[((b * shape.channels_out + o) * out_h + i) * out_w + j]);
                        grad_b[o] += upstream;
                        for c in 0..shape.channels_in {
                            for p in 0..shape.kernel[0] {
                                for q in 0..shape.kernel[1] {
                                    let Some((row, col)) = definition_pixel(shape, [i, j], [p, q])
                                    else {
                                        continue;
                                    };
                                    let wi = ((o * shape.channels_in + c) * shape.kernel[0] + p)
                                        * shape.kernel[1]
                                        + q;
                                    let xi = ((b * shape.channels_in + c) * h + row) * wd + col;
                                    grad_w[wi] += upstream * f64::from(x[xi]);
                                    grad_x[xi] += upstream * f64::from(w[wi]);
                                }
                            }
                        }
                    }
                }
            }
        }
        [grad_x, grad_w, grad_b]
    }

    fn assert_close(name: &str, actual: &[f32], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{name}: length");
        for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
            let tolerance = 1e-4 * (1.0 + e.abs());
            assert!(
                (f64::from(*a) - e).abs() <= tolerance,
                "{name}[{index}]: {a} against {e}"
            );
        }
    }

    /// Shapes that cross chunk boundaries (several chunks, a short last one), with padding,
    /// strides, dilation and non-square kernels.
    fn shapes() -> Vec<ConvShape> {
        let conv = |input: [usize; 4], weight: [usize; 4], stride, padding, dilation| {
            ConvShape::new(input, weight, stride, padding, dilation).expect("a valid shape")
        };
        vec![
            // 4 output positions per sample: 64 samples per forward chunk, 128 per backward.
            conv([130, 3, 2, 2], [5, 3, 3, 3], [1, 1], [1, 1], [1, 1]).with_output_check([2, 2]),
            // The network's first layer's geometry (k11, s4, p5) on a smaller image.
            conv([9, 2, 12, 12], [4, 2, 11, 11], [4, 4], [5, 5], [1, 1]),
            // Dilation, a non-square kernel and unequal strides and padding per axis.
            conv([7, 3, 9, 8], [6, 3, 3, 2], [2, 1], [2, 0], [2, 3]),
            // A 1×1 kernel, no padding.
            conv([3, 4, 5, 5], [2, 4, 1, 1], [1, 1], [0, 0], [1, 1]),
        ]
    }

    impl ConvShape {
        fn with_output_check(self, expected: [usize; 2]) -> Self {
            assert_eq!(self.output(), expected);
            self
        }
    }

    #[test]
    fn values_and_gradients_equal_the_definition_across_chunks() {
        for (case, shape) in shapes().iter().enumerate() {
            let x = random_values(10 + case as u64, shape.batch * shape.input_per_sample());
            let w = random_values(20 + case as u64, shape.weight_len());
            let bias = random_values(30 + case as u64, shape.channels_out);
            let g = random_values(40 + case as u64, shape.batch * shape.output_per_sample());
            let y = conv2d_forward(shape, &x, &w, Some(&bias));
            assert_close(
                &format!("case {case} y"),
                &y,
                &reference_forward(shape, &x, &w, &bias),
            );
            let gradients = conv2d_backward(shape, &x, &w, &g, [true, true, true]);
            let [grad_x, grad_w, grad_b] = reference_backward(shape, &x, &w, &g);
            assert_close(
                &format!("case {case} ∂x"),
                &gradients.input.unwrap(),
                &grad_x,
            );
            assert_close(
                &format!("case {case} ∂w"),
                &gradients.weight.unwrap(),
                &grad_w,
            );
            assert_close(
                &format!("case {case} ∂b"),
                &gradients.bias.unwrap(),
                &grad_b,
            );
        }
    }

    #[test]
    fn taps_give_the_first_layers_hand_computed_ranges_and_agree_with_every_index() {
        // The network's first layer on 32 × 32: kernel 11, stride 4, padding 5, 8 outputs.
        // Offset 0 reads 4·o − 5: inside from o = 2 (input 3) to o = 7 (input 23). Offset 10
        // reads 4·o + 5: inside from o = 0 (input 5) to o = 6 (input 29); o = 7 reads 33.
        let first_layer =
            ConvShape::new([1, 3, 32, 32], [64, 3, 11, 11], [4, 4], [5, 5], [1, 1]).unwrap();
        let taps = first_layer.taps(0);
        assert_eq!(taps.len(), 11);
        assert_eq!((taps[0].outputs.clone(), taps[0].first_input), (2..8, 3));
        assert_eq!((taps[10].outputs.clone(), taps[10].first_input), (0..7, 5));
        assert_eq!(taps[0].inputs().collect::<Vec<_>>(), [3, 7, 11, 15, 19, 23]);
        for (case, shape) in shapes().iter().chain([&first_layer]).enumerate() {
            for axis in 0..2 {
                for (kernel, tap) in shape.taps(axis).iter().enumerate() {
                    let expected: Vec<(usize, usize)> = (0..shape.output()[axis])
                        .filter_map(|output| {
                            Some((output, shape.input_index(output, kernel, axis)?))
                        })
                        .collect();
                    let actual: Vec<(usize, usize)> =
                        tap.outputs.clone().zip(tap.inputs()).collect();
                    assert_eq!(
                        actual, expected,
                        "case {case}, axis {axis}, offset {kernel}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_hand_computed_batch_of_two_with_padding() {
        // Two 2×2 images (1..4 and 5..8), a 2×2 kernel [[1, 0], [0, 1]], bias 1, padding 1,
        // stride 2: outputs at (0,0) read only x[0][0]·w[1][1], at (0,1) x[0][1]·w[1][0] (0),
        // at (1,0) x[1][0]·w[0][1] (0), at (1,1) x[1][1]·w[0][0].
        let shape = ConvShape::new([2, 1, 2, 2], [1, 1, 2, 2], [2, 2], [1, 1], [1, 1]).unwrap();
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let w = [1.0, 0.0, 0.0, 1.0];
        let y = conv2d_forward(&shape, &x, &w, Some(&[1.0]));
        assert_eq!(y, vec![2.0, 1.0, 1.0, 5.0, 6.0, 1.0, 1.0, 9.0]);
        let gradients = conv2d_backward(&shape, &x, &w, &[1.0; 8], [true, true, true]);
        // ∂Σy/∂x: each pixel is read once, by the kernel entry on the diagonal or off it.
        assert_eq!(
            gradients.input.unwrap(),
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
        );
        // ∂Σy/∂w[p][q]: the pixels read at kernel entry (p, q), summed over both images.
        assert_eq!(
            gradients.weight.unwrap(),
            vec![4.0 + 8.0, 3.0 + 7.0, 2.0 + 6.0, 1.0 + 5.0]
        );
        assert_eq!(gradients.bias.unwrap(), vec![8.0]);
    }

    #[test]
    fn only_the_wanted_gradients_are_computed() {
        let shape = shapes()[1];
        let x = random_values(1, shape.batch * shape.input_per_sample());
        let w = random_values(2, shape.weight_len());
        let g = random_values(3, shape.batch * shape.output_per_sample());
        let all = conv2d_backward(&shape, &x, &w, &g, [true, true, true]);
        let some = conv2d_backward(&shape, &x, &w, &g, [false, true, false]);
        assert_eq!(some.input, None);
        assert_eq!(some.bias, None);
        assert_eq!(some.weight, all.weight);
    }

    #[test]
    fn the_same_values_bit_for_bit_on_one_thread_and_on_four() {
        let shape = shapes()[0];
        let x = random_values(4, shape.batch * shape.input_per_sample());
        let w = random_values(5, shape.weight_len());
        let bias = random_values(6, shape.channels_out);
        let g = random_values(7, shape.batch * shape.output_per_sample());
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = conv2d_forward(&shape, &x, &w, Some(&bias));
                (y, conv2d_backward(&shape, &x, &w, &g, [true, true, true]))
            })
        };
        assert_eq!(run(1), run(4));
    }

    #[test]
    fn shapes_it_cannot_take_are_refused_by_name() {
        let error = ConvShape::new([1, 3, 8, 8], [4, 2, 3, 3], [1, 1], [0, 0], [1, 1]).unwrap_err();
        assert_eq!(
            error,
            ConvShapeError::ChannelMismatch {
                input: 3,
                weight: 2
            }
        );
        let error = ConvShape::new([1, 1, 2, 2], [1, 1, 5, 5], [1, 1], [1, 1], [1, 1]).unwrap_err();
        assert_eq!(
            error,
            ConvShapeError::KernelLargerThanInput {
                axis: 0,
                padded: 4,
                kernel: 5
            }
        );
        let error = ConvShape::new([1, 1, 4, 4], [1, 1, 3, 3], [0, 1], [0, 0], [1, 1]).unwrap_err();
        assert_eq!(error, ConvShapeError::ZeroStep);
    }

    #[test]
    fn an_empty_batch_gives_empty_outputs_and_zero_parameter_gradients() {
        let shape = ConvShape::new([0, 2, 4, 4], [3, 2, 3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
        assert!(conv2d_forward(&shape, &[], &[0.5; 54], None).is_empty());
        let gradients = conv2d_backward(&shape, &[], &[0.5; 54], &[], [true, true, true]);
        assert_eq!(gradients.input, Some(vec![]));
        assert_eq!(gradients.weight, Some(vec![0.0; 54]));
        assert_eq!(gradients.bias, Some(vec![0.0; 3]));
    }
}
