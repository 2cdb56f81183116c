pub struct LoopbackPlaceholder;
