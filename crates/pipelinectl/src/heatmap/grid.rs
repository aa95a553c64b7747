//! The heat map's grid: event counts per cell, filled from the warehouse's binned rows.

use warehouse::query::CellCount;

/// Counts on a `columns` × `rows` grid; row 0 is the top of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub columns: u32,
    pub rows: u32,
    counts: Vec<u64>,
    /// Events the warehouse binned outside the grid (none, unless the map size is wrong).
    pub outside: u64,
}

impl Grid {
    pub fn new(columns: u32, rows: u32) -> Self {
        Self {
            columns,
            rows,
            counts: vec![0; columns as usize * rows as usize],
            outside: 0,
        }
    }

    /// Adds a binned row. A point exactly on the right or bottom edge bins one past the
    /// last cell and belongs to it.
    pub fn add(&mut self, cell: CellCount) {
        let events = u64::try_from(cell.events).unwrap_or(0);
        let column = if cell.column == i64::from(self.columns) {
            cell.column - 1
        } else {
            cell.column
        };
        let row = if cell.row == i64::from(self.rows) {
            cell.row - 1
        } else {
            cell.row
        };
        match (u32::try_from(column), u32::try_from(row)) {
            (Ok(c), Ok(r)) if c < self.columns && r < self.rows => {
                self.counts[(r * self.columns + c) as usize] += events;
            }
            _ => self.outside += events,
        }
    }

    pub fn get(&self, column: u32, row: u32) -> u64 {
        self.counts[(row * self.columns + column) as usize]
    }

    pub fn max(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Every cell with its map rectangle, as CSV with a header.
    pub fn to_csv(&self, width: f64, height: f64) -> String {
        let (cell_w, cell_h) = (width / f64::from(self.columns), height / f64::from(self.rows));
        let mut out = String::from("column,row,x_min,y_min,x_max,y_max,events\n");
        for row in 0..self.rows {
            for column in 0..self.columns {
                let (x, y) = (f64::from(column) * cell_w, f64::from(row) * cell_h);
                out.push_str(&format!(
                    "{column},{row},{x},{y},{},{},{}\n",
                    x + cell_w,
                    y + cell_h,
                    self.get(column, row)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(column: i64, row: i64, events: i64) -> CellCount {
        CellCount { column, row, events }
    }

    #[test]
    fn known_cells_give_the_expected_counts() {
        let mut grid = Grid::new(4, 3);
        grid.add(cell(0, 0, 2));
        grid.add(cell(3, 2, 5));
        grid.add(cell(4, 3, 1)); // a point on the bottom-right corner
        grid.add(cell(1, 1, 7));
        grid.add(cell(9, 0, 4)); // outside
        grid.add(cell(-1, 0, 1)); // outside
        assert_eq!(grid.get(0, 0), 2);
        assert_eq!(grid.get(3, 2), 6);
        assert_eq!(grid.get(1, 1), 7);
        assert_eq!(grid.get(2, 1), 0);
        assert_eq!((grid.total(), grid.max(), grid.outside), (15, 7, 5));
    }

    #[test]
    fn csv_has_every_cell_with_its_rectangle() {
        let mut grid = Grid::new(2, 2);
        grid.add(cell(1, 0, 3));
        let csv = grid.to_csv(100.0, 50.0);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "column,row,x_min,y_min,x_max,y_max,events");
        assert_eq!(lines[2], "1,0,50,0,100,25,3");
        assert_eq!(lines[4], "1,1,50,25,100,50,0");
    }
}
