//! The macro that declares a kernel table: an enum with one variant per `extern "C"` entry point
//! of one image, its `ALL` list and each variant's name. The production image's table is
//! [`super::Kernel`] (device.rs); the test image's, `TestKernel` (test_kernels.rs, feature
//! `harness`). A test in the root crate (`src/kernels.rs`) checks each table against the entry
//! points build.rs found in its image, both ways.

/// `kernel_table! { /// doc \n pub enum Name; Variant => "entry_point", ... }`.
macro_rules! kernel_table {
    ($(#[$doc:meta])* $vis:vis enum $table:ident; $($variant:ident => $name:literal,)*) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $table { $($variant,)* }

        impl $table {
            pub const ALL: &'static [$table] = &[$($table::$variant,)*];
            pub fn name(self) -> &'static str {
                match self { $($table::$variant => $name,)* }
            }
        }
    };
}

pub(crate) use kernel_table;
